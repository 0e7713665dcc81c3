//! The kinds of deferred closures a scope holds, and what a drain tells them.
//!
//! What is deferred is a [`Call`]: a closure, or a value held by the scope with the closure
//! that gets it back ([`Held`]). Plain ones only run. Fallible ones report their error, and outcome-aware ones run or
//! not depending on how the scope ended; both need a [`DrainContext`], which a scope provides
//! only once it holds such a closure, so that scopes without them never pay for it.

#[cfg(feature = "std")]
use alloc::boxed::Box;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use core::future::Future;
use core::marker::PhantomData;
use core::panic::Location;
#[cfg(feature = "std")]
use core::pin::Pin;

use crate::bounds::CleanupOutput;
use crate::error::BoxError;

/// How the scope's body ended, as far as outcome-aware closures are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Left normally, or returned `Ok`.
    Success,
    /// Returned `Err`, or panicked.
    Failure,
}

impl Outcome {
    /// The outcome of a body that returned `result`.
    pub(crate) fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

/// What one drain of a scope tells its closures, and collects from them.
#[derive(Debug)]
pub(crate) struct DrainContext {
    /// How the body ended.
    pub(crate) outcome: Outcome,
    /// Errors of fallible closures, in the order they happened.
    pub(crate) errors: Vec<BoxError>,
    /// Where the closure of each error was registered, in step with `errors`: a report of an
    /// error that nothing can return names its own line.
    pub(crate) error_sites: Vec<&'static Location<'static>>,
    /// Closures that panicked so far.
    pub(crate) panics: usize,
}

impl DrainContext {
    pub(crate) fn new(outcome: Outcome) -> Self {
        DrainContext {
            outcome,
            errors: Vec::new(),
            error_sites: Vec::new(),
            panics: 0,
        }
    }

    /// The outcome as it stands now: the body's, turned into a failure by any closure that
    /// panicked or failed before this point. Go, Python's `ExitStack` and the block guards
    /// agree on this rule.
    pub(crate) fn failed(&self) -> bool {
        self.outcome == Outcome::Failure || self.panics > 0 || !self.errors.is_empty()
    }

    /// Keeps the error of the cleanup registered at `site`.
    pub(crate) fn record_error(&mut self, site: &'static Location<'static>, error: BoxError) {
        self.error_sites.push(site);
        self.errors.push(error);
    }
}

/// Something to call once: a closure, or a held value with its cleanup.
pub(crate) trait Call {
    type Output;
    fn call(self) -> Self::Output;
}

impl<F: FnOnce() -> O, O> Call for F {
    type Output = O;

    #[inline(always)]
    fn call(self) -> O {
        self()
    }
}

/// A value the scope holds, lent out until the scope ends, then given to `cleanup`.
pub(crate) struct Held<T, C> {
    pub(crate) value: T,
    pub(crate) cleanup: C,
}

impl<T, C: FnOnce(T) -> O, O> Call for Held<T, C> {
    type Output = O;

    #[inline(always)]
    fn call(self) -> O {
        (self.cleanup)(self.value)
    }
}

#[cfg(feature = "std")]
/// An async cleanup's future, boxed once, with its output made uniform.
pub(crate) type CleanupFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

#[cfg(feature = "std")]
/// An async cleanup that a drain has reached, to be awaited: its future, and where it was
/// registered, so that an error or a cancellation can point at the user's code.
pub(crate) struct Started<'a> {
    pub(crate) future: CleanupFuture<'a>,
    pub(crate) site: &'static Location<'static>,
}

/// A closure as stored in a scope.
pub(crate) trait Deferred {
    /// Runs the closure where no context exists: only plain closures are ever run this way.
    fn run(self);
    /// Runs (or drops) the closure with what the drain knows.
    fn run_in(self, context: &mut DrainContext);
    #[cfg(feature = "std")]
    /// Consumes the closure in an async drain: a sync closure runs (as `run_in`); an async
    /// cleanup hands back the future to await, or `None` if it is skipped.
    fn start<'a>(self, context: &mut DrainContext) -> Option<Started<'a>>
    where
        Self: Sized + 'a,
    {
        self.run_in(context);
        None
    }
}

/// Always runs.
pub(crate) struct Plain<F>(pub(crate) F);

impl<F: Call<Output: CleanupOutput>> Deferred for Plain<F> {
    #[inline(always)]
    fn run(self) {
        self.0.call();
    }

    #[inline(always)]
    fn run_in(self, _: &mut DrainContext) {
        self.0.call();
    }
}

/// Returns `Result<(), E>`: always runs; its error is collected, with where it was
/// registered, so that an error nobody can return points at the user's code.
pub(crate) struct Fallible<F, E> {
    pub(crate) call: F,
    pub(crate) site: &'static Location<'static>,
    pub(crate) error: PhantomData<fn() -> E>,
}

impl<F, E> Deferred for Fallible<F, E>
where
    F: Call<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    fn run(self) {
        // Unreachable: a scope drains with a context once it holds a fallible closure. If it
        // ever were reached, losing the error silently would be the worst answer.
        if let Err(error) = self.call.call() {
            panic!(
                "a cleanup registered at {} failed where its error cannot be reported: {}",
                self.site,
                error.into()
            );
        }
    }

    fn run_in(self, context: &mut DrainContext) {
        if let Err(error) = self.call.call() {
            context.record_error(self.site, error.into());
        }
    }
}

/// Runs only if the scope failed (Zig's `errdefer`).
pub(crate) struct OnFailure<F>(pub(crate) F);

impl<F: Call<Output: CleanupOutput>> Deferred for OnFailure<F> {
    fn run(self) {
        // Without a context the scope ended normally: nothing to roll back.
    }

    fn run_in(self, context: &mut DrainContext) {
        if context.failed() {
            self.0.call();
        }
    }
}

/// Runs only if the scope succeeded.
pub(crate) struct OnSuccess<F>(pub(crate) F);

impl<F: Call<Output: CleanupOutput>> Deferred for OnSuccess<F> {
    fn run(self) {
        self.0.call();
    }

    fn run_in(self, context: &mut DrainContext) {
        if !context.failed() {
            self.0.call();
        }
    }
}
