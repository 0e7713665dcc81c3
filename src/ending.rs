//! How a scope ends when it holds fallible or outcome-aware closures: draining with a
//! context, delivering the errors nobody can return, and [`try_scope`], which returns them.

#[cfg(feature = "std")]
use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::deferred::{DrainContext, Outcome};
use crate::error::{BoxError, CleanupErrors, ScopeError};
#[cfg(feature = "std")]
use crate::guard::__private::PanicState;
use crate::scope::Scope;

/// What a drain with context left behind.
pub(crate) struct Drained {
    errors: Vec<BoxError>,
    /// The first panic of a closure, caught so that the errors can be delivered first.
    #[cfg(feature = "std")]
    panic: Option<Box<dyn core::any::Any + Send>>,
}

impl<'env, const N: usize> Scope<'env, N> {
    /// Runs every closure with the given outcome and returns the errors; the first panic of a
    /// closure resumes after the errors are delivered to the handler (or printed).
    pub(crate) fn end_with(&mut self, outcome: Outcome) -> Result<(), CleanupErrors> {
        if !self.arena.has_extras() {
            self.arena.run_all();
            return Ok(());
        }
        let drained = self.drain_in(outcome);
        let errors = self.resume_panic(drained);
        CleanupErrors::from_vec(errors).map_or(Ok(()), Err)
    }

    /// Ends the scope of a body that panicked: runs every closure as failed, catching their
    /// panics, and delivers their errors without panicking (the thread is unwinding).
    pub(crate) fn end_after_panic(&mut self) {
        if !self.arena.has_extras() {
            // Now, not when the scope ends: a loop's scope may outlive the caught panic.
            #[cfg(feature = "std")]
            self.arena.run_all_caught();
            #[cfg(not(feature = "std"))]
            self.arena.run_all();
            return;
        }
        let drained = self.drain_in(Outcome::Failure);
        self.settle_while_unwinding(drained);
    }

    /// Runs every closure with a context and records what happened.
    #[cold]
    pub(crate) fn drain_in(&mut self, outcome: Outcome) -> Drained {
        let pending = self.arena.len();
        if let Some(extras) = self.arena.extras_mut() {
            // Every pending closure is consumed from here on, even if one panics.
            extras.needs_context.set(false);
            if let Some(counters) = &mut extras.counters {
                counters.ran(pending);
            }
        }
        let mut context = DrainContext::new(outcome);
        #[cfg(feature = "std")]
        let panic = self.arena.run_all_caught_in(&mut context);
        #[cfg(not(feature = "std"))]
        self.arena.run_all_in(&mut context);
        if let Some(extras) = self.arena.extras_mut() {
            #[cfg(feature = "std")]
            {
                extras.panic_state.set(None);
            }
            if let Some(counters) = &mut extras.counters {
                counters.failed(context.panics, context.errors.len());
            }
        }
        Drained {
            errors: context.errors,
            #[cfg(feature = "std")]
            panic,
        }
    }

    /// Delivers what a drain left when nobody can return it: errors to the handler (or a
    /// panic without one), then the first closure panic.
    #[track_caller]
    pub(crate) fn deliver(&mut self, drained: Drained) {
        let errors = self.resume_panic(drained);
        self.report(errors, true);
    }

    /// Resumes the first closure panic, if any, once the errors (which can then not be
    /// returned) are delivered; otherwise hands the errors back.
    fn resume_panic(&mut self, drained: Drained) -> Vec<BoxError> {
        #[cfg(feature = "std")]
        if let Some(payload) = drained.panic {
            self.report(drained.errors, false);
            std::panic::resume_unwind(payload);
        }
        drained.errors
    }

    /// Disposes of what a drain left while the thread is unwinding, where a panic would abort.
    fn settle_while_unwinding(&mut self, drained: Drained) {
        #[cfg(feature = "std")]
        if let Some(payload) = drained.panic {
            crate::arena::drop_payload(payload);
        }
        self.report(drained.errors, false);
    }

    /// Hands errors to the handler; without one, panics if `may_panic`, else prints them (with
    /// `std`) so that they are not lost in silence.
    #[track_caller]
    pub(crate) fn report(&mut self, errors: Vec<BoxError>, may_panic: bool) {
        if errors.is_empty() {
            return;
        }
        if let Some(handler) = self.arena.extras_mut().and_then(|e| e.on_error.as_mut()) {
            errors.into_iter().for_each(handler);
            return;
        }
        let errors = CleanupErrors::from_vec(errors).expect("not empty");
        if may_panic {
            panic!("{errors} (set a handler with Scope::on_error, or end the scope with finish())");
        }
        #[cfg(feature = "std")]
        std::eprintln!("scoped-defer: {errors}, while the thread was already panicking");
    }
}

impl<const N: usize> Scope<'_, N> {
    #[cold]
    #[inline(never)]
    pub(crate) fn drop_with_extras(&mut self) {
        if self.arena.len() == 0 {
            return;
        }
        #[cfg(feature = "std")]
        let (failed, unwinding) = (
            self.arena
                .extras()
                .and_then(|e| e.panic_state.get())
                .is_some_and(PanicState::unwinding_since),
            std::thread::panicking(),
        );
        // Without `std` a scope cannot tell that it is unwinding.
        #[cfg(not(feature = "std"))]
        let (failed, unwinding) = (false, false);
        let drained = self.drain_in(if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        });
        if unwinding {
            self.settle_while_unwinding(drained);
        } else {
            self.deliver(drained);
        }
    }
}

/// Runs `f` with a fresh [`Scope`], then its closures, and reports how both went: the body's
/// error first, with any cleanup errors attached as suppressed (Java's rule); if the body
/// succeeded, the cleanup errors are the error. Closures registered with
/// [`defer_on_error`](Scope::defer_on_error) run if the body returns `Err` or panics.
///
/// # Errors
///
/// [`ScopeError::Body`] if `f` returned `Err`; [`ScopeError::Cleanup`] if `f` succeeded but a
/// fallible cleanup failed.
///
/// ```
/// use scoped_defer::{ScopeError, try_scope};
///
/// let result = try_scope(|s| {
///     s.defer_fallible(|| Err::<(), _>("flush failed"));
///     Ok::<_, std::io::Error>("written")
/// });
/// match result {
///     Err(ScopeError::Cleanup(errors)) => assert_eq!(errors.first().to_string(), "flush failed"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
pub fn try_scope<'env, T, E>(
    f: impl FnOnce(&mut Scope<'env>) -> Result<T, E>,
) -> Result<T, ScopeError<E>> {
    let mut scope = Scope::new();
    let result = body_of(&mut scope, f);
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let cleanup = scope.end_with(outcome);
    combine(result, cleanup)
}

/// Runs a body on `scope`; if the body panics, the scope's closures run as failed.
pub(crate) fn body_of<'env, const N: usize, R>(
    scope: &mut Scope<'env, N>,
    f: impl FnOnce(&mut Scope<'env, N>) -> R,
) -> R {
    let mut guard = scopeguard::guard(scope, |scope| scope.end_after_panic());
    let result = f(&mut **guard);
    scopeguard::ScopeGuard::into_inner(guard);
    result
}

/// Java's rule: the body's error is primary, cleanup errors are suppressed.
pub(crate) fn combine<T, E>(
    body: Result<T, E>,
    cleanup: Result<(), CleanupErrors>,
) -> Result<T, ScopeError<E>> {
    match (body, cleanup) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(errors)) => Err(ScopeError::Cleanup(errors)),
        (Err(error), cleanup) => Err(ScopeError::Body {
            error,
            suppressed: cleanup.err(),
        }),
    }
}
