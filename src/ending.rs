//! How a scope ends when it holds fallible or outcome-aware closures: draining with a
//! context, delivering the errors nobody can return, and [`try_scope`], which returns them.

use alloc::vec::Vec;
use core::panic::Location;

use crate::arena::drop_quietly;
#[cfg(feature = "std")]
use crate::arena::{Payload, drop_payload};
use crate::deferred::{DrainContext, Outcome};
use crate::error::{BoxError, CleanupErrors, ScopeError};
#[cfg(feature = "std")]
use crate::guard::__private::PanicState;
#[cfg(feature = "std")]
use crate::report::ReportKind;
use crate::scope::Scope;
use crate::stats::Consumed;

/// What a drain with context left behind.
pub(crate) struct Drained {
    errors: Vec<BoxError>,
    /// Where the closure of each error was registered.
    error_sites: Vec<&'static Location<'static>>,
    /// The first panic of a closure, caught so that the errors can be delivered first.
    #[cfg(feature = "std")]
    panic: Option<Payload>,
}

impl Drained {
    /// Whether the drain left nothing to deliver: no error and no panic.
    fn is_clean(&self) -> bool {
        #[cfg(feature = "std")]
        if self.panic.is_some() {
            return false;
        }
        self.errors.is_empty()
    }
}

impl<'env, const N: usize> Scope<'env, N> {
    /// Runs every closure with the given outcome and returns the errors; the first panic of a
    /// closure resumes after the errors are delivered to the handler (or reported).
    pub(crate) fn end_with(&mut self, outcome: Outcome) -> Result<(), CleanupErrors> {
        if !self.drains_in_context() {
            self.arena.run_all();
            return Ok(());
        }
        #[cfg_attr(not(feature = "std"), allow(unused_mut))]
        let mut drained = self.drain_in(outcome);
        #[cfg(feature = "std")]
        if let Some(payload) = drained.panic.take() {
            // The panic wins; the errors, which can then not be returned, go to the handler.
            if let Some(handler_panic) = self.report(drained, false) {
                drop_payload(handler_panic);
            }
            std::panic::resume_unwind(payload);
        }
        CleanupErrors::from_vec(drained.errors).map_or(Ok(()), Err)
    }

    /// Ends the scope of a body that panicked: runs every closure as failed, catching their
    /// panics, and delivers their errors without panicking (the thread is unwinding).
    pub(crate) fn end_after_panic(&mut self) {
        if !self.drains_in_context() {
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
        if let Some(extras) = self.arena.extras() {
            // Every pending closure is consumed from here on, even if one panics.
            extras.forget_pending();
            self.count_consumed(Consumed::Ran);
        }
        let mut context = DrainContext::new(outcome);
        #[cfg(feature = "std")]
        let panic = self.arena.run_all_caught_in(&mut context);
        #[cfg(not(feature = "std"))]
        self.arena.run_all_in(&mut context);
        if let Some(extras) = self.arena.extras_mut() {
            extras.tracking.failed(context.panics, context.errors.len());
        }
        Drained {
            errors: context.errors,
            error_sites: context.error_sites,
            #[cfg(feature = "std")]
            panic,
        }
    }

    /// Delivers what a drain left when nobody can return it and the thread is not unwinding:
    /// errors to the handler (without one, a panic that says where the failed cleanup was
    /// registered), then the first panic, of a closure or else of the handler, resumes.
    #[track_caller]
    pub(crate) fn deliver(
        &mut self,
        #[cfg_attr(not(feature = "std"), allow(unused_mut))] mut drained: Drained,
    ) {
        if drained.is_clean() {
            // The common case, which needs neither the handler nor a report.
            return;
        }
        #[cfg(feature = "std")]
        let closure_panic = drained.panic.take();
        #[cfg(feature = "std")]
        let may_panic = closure_panic.is_none();
        #[cfg(not(feature = "std"))]
        let may_panic = true;
        let handler_panic = self.report(drained, may_panic);
        #[cfg(feature = "std")]
        match (closure_panic, handler_panic) {
            (Some(first), later) => {
                if let Some(later) = later {
                    drop_payload(later);
                }
                std::panic::resume_unwind(first);
            }
            (None, Some(first)) => std::panic::resume_unwind(first),
            (None, None) => {}
        }
        #[cfg(not(feature = "std"))]
        let _ = handler_panic;
    }

    /// Disposes of what a drain left while the thread is unwinding, where a panic would abort:
    /// every panic, of a closure or of the handler, is caught and dropped.
    fn settle_while_unwinding(
        &mut self,
        #[cfg_attr(not(feature = "std"), allow(unused_mut))] mut drained: Drained,
    ) {
        #[cfg(feature = "std")]
        if let Some(payload) = drained.panic.take() {
            drop_payload(payload);
        }
        #[cfg(feature = "std")]
        if let Some(payload) = self.report(drained, false) {
            drop_payload(payload);
        }
        #[cfg(not(feature = "std"))]
        let _ = self.report(drained, false);
    }

    /// Hands errors to the handler, catching its panics (the first is returned) so that every
    /// error is handed over. Without a handler: panics if `may_panic`, else reports each one
    /// (with `std`) so that none is lost in silence.
    #[track_caller]
    fn report(&mut self, drained: Drained, may_panic: bool) -> Option<Handed> {
        let Drained {
            errors,
            error_sites,
            ..
        } = drained;
        if errors.is_empty() {
            return None;
        }
        if let Some(handler) = self.arena.extras_mut().and_then(|e| e.handler.as_mut()) {
            return hand_over(handler, errors);
        }
        if may_panic {
            let site = error_sites[0];
            unreported(CleanupErrors::from_vec(errors).expect("not empty"), site);
        }
        #[cfg(feature = "std")]
        for (error, site) in errors.iter().zip(error_sites) {
            crate::report::send(ReportKind::ErrorLostToPanic, site, Some(&**error));
        }
        // Reported: what is left is their drop, which must not panic here (the thread may be
        // unwinding, or a closure's panic is about to resume).
        errors.into_iter().for_each(drop_quietly);
        None
    }
}

/// What a panicking handler left: its first payload (with `std`; without it, a handler panic
/// propagates at once).
#[cfg(feature = "std")]
type Handed = Payload;
#[cfg(not(feature = "std"))]
type Handed = core::convert::Infallible;

/// Gives every error to `handler`; with `std`, catches its panics and returns the first.
fn hand_over(handler: &mut dyn FnMut(BoxError), errors: Vec<BoxError>) -> Option<Handed> {
    #[cfg(feature = "std")]
    {
        let mut first = None;
        for error in errors {
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(error)));
            if let Err(payload) = handled {
                match first {
                    None => first = Some(payload),
                    Some(_) => drop_payload(payload),
                }
            }
        }
        first
    }
    #[cfg(not(feature = "std"))]
    {
        errors.into_iter().for_each(handler);
        None
    }
}

/// Panics for errors that nobody can return, pointing at the caller (with `#[track_caller]`
/// up to user code where possible) and at the failed cleanup's registration.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn unreported(errors: CleanupErrors, site: &Location<'_>) -> ! {
    // Formatted here, where a panicking `Display` can be caught: inside the panic hook, it
    // would abort the process. Then dropped, before the panic: during its unwind, a panicking
    // drop would abort the process too.
    #[cfg(feature = "std")]
    let errors = {
        let text = describe(&errors);
        drop_quietly(errors);
        text
    };
    panic!(
        "{errors} (registered at {site}), and nothing could return the error: give the scope a \
         handler with set_error_handler, or end it with finish() or try_scope"
    )
}

/// `errors` as their `Display` shows them, each message formatted under `catch_unwind`: one
/// whose `Display` panics is replaced by a note.
#[cfg(feature = "std")]
fn describe(errors: &CleanupErrors) -> alloc::string::String {
    use core::fmt::Write;
    let mut text = alloc::string::String::new();
    if errors.len() == 1 {
        text.push_str("cleanup failed: ");
    } else {
        let _ = write!(text, "{} cleanups failed: ", errors.len());
    }
    for (i, error) in errors.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let message = crate::report::message_of(error);
        text.push_str(
            message
                .as_deref()
                .unwrap_or("(the error's Display panicked)"),
        );
    }
    text
}

impl<const N: usize> Scope<'_, N> {
    /// Frees the storage of a dropped scope. The error handler is dropped first, on its own,
    /// catching a panic of its captures: freed with the rest during an unwind (the drop of a
    /// scope whose cleanup panicked), it would abort the process. That panic resumes once the
    /// storage is freed, unless the thread is already unwinding.
    pub(crate) fn release_on_drop(&mut self) {
        #[cfg(feature = "std")]
        let handler_panic = self
            .arena
            .extras_mut()
            .and_then(|extras| extras.handler.take())
            .and_then(|handler| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(handler))).err()
            });
        self.arena.release();
        #[cfg(feature = "std")]
        if let Some(payload) = handler_panic {
            if std::thread::panicking() {
                drop_payload(payload);
            } else {
                std::panic::resume_unwind(payload);
            }
        }
    }

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
///
/// # Why the body ends with `Ok::<_, E>(..)`
///
/// A body that uses `?` must name its error type once, usually in its last line:
/// `Ok::<_, io::Error>(())`. Each `?` converts with `From`, one into the body's error and one
/// out of `try_scope`'s, and Rust cannot infer the type in between. With anyhow, write
/// `anyhow::Ok(())`, which names it; then a bare `?` turns the `ScopeError<anyhow::Error>`
/// into an `anyhow::Error`, suppressed cleanup errors included in its message. This holds for
/// every `try_` function of the crate.
///
/// ```
/// # if cfg!(miri) { return; } // Miri runs without a file system
/// use scoped_defer::try_scope;
///
/// fn read_config(path: &str) -> anyhow::Result<String> {
///     let text = try_scope(|s| {
///         s.defer_fallible(|| Err::<(), _>("unlock failed"));
///         let text = std::fs::read_to_string(path)?;
///         anyhow::Ok(text)
///     })?;
///     Ok(text)
/// }
///
/// let error = read_config("/nonexistent/config.toml").unwrap_err();
/// assert!(error.to_string().contains("(and cleanup failed: unlock failed)"));
/// ```
pub fn try_scope<'env, T, E>(
    f: impl FnOnce(&mut Scope<'env>) -> Result<T, E>,
) -> Result<T, ScopeError<E>> {
    let mut scope = Scope::new();
    let result = body_of(&mut scope, f);
    let cleanup = scope.end_with(Outcome::of(&result));
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
