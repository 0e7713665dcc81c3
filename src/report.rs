//! Reports of what the crate cannot return: a cleanup error lost to a panic, and the async
//! cleanups of a cancelled [`AsyncScope`](crate::AsyncScope). Each goes, as a [`Report`], to
//! one process-wide hook, set like [`std::panic::set_hook`].
//!
//! The default hook writes one line per report to standard error, and ignores a failed write
//! (a closed pipe, a closed descriptor): reporting never panics or aborts. With the `tracing`
//! feature it emits a `tracing` event instead, whenever a subscriber is set.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use scoped_defer::report::{self, ReportKind};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let for_hook = Arc::clone(&seen);
//! report::set_hook(Box::new(move |report| {
//!     for_hook.lock().unwrap().push((report.kind(), report.site().line()));
//! }));
//!
//! let scope = scoped_defer::AsyncScope::new();
//! let line = line!() + 1;
//! scope.defer_async(async { println!("never awaited") });
//! drop(scope); // cancelled outside a tokio runtime: nothing can await the cleanup
//!
//! let default = report::take_hook(); // back to standard error
//! drop(default);
//! let seen = seen.lock().unwrap();
//! assert_eq!(seen.len(), 1);
//! assert!(matches!(
//!     seen[0].0,
//!     ReportKind::NotAwaitedOutsideRuntime | ReportKind::NotAwaitedWithoutTokio
//! ));
//! assert_eq!(seen[0].1, line);
//! ```
//!
//! The hook is user code that the crate calls where a panic could abort the process (a scope
//! dropped during an unwind): a panic of the hook is caught and dropped, and the report then
//! goes to standard error. So does any text the crate formats: an error whose `Display`
//! panics is reported without its message.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use core::error::Error;
use core::fmt;
use core::panic::Location;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{PoisonError, RwLock};

#[cfg(feature = "tokio")]
use crate::arena::Payload;
use crate::arena::drop_payload;

/// What a [`Report`] is about: what was lost, and why.
///
/// The cleanup of a cancelled `AsyncScope` here is also one that
/// [`Held::run_now_async`](crate::Held::run_now_async) was awaiting when its future was
/// dropped, and one that a sync `run_now` ([`Entry::run_now`](crate::Entry::run_now),
/// [`Held::run_now`](crate::Held::run_now)) started, which nothing there can await: each is
/// handed over the same way.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// A fallible cleanup failed while a panic (of the body, of another cleanup, or of the
    /// thread that dropped the scope) was on its way out, and the scope had no
    /// [error handler](crate::Scope::set_error_handler): nothing could return the error, which
    /// is in [`Report::error`].
    ErrorLostToPanic,
    /// An async cleanup of a cancelled [`AsyncScope`](crate::AsyncScope), awaited by the task
    /// it was spawned as (`tokio` feature), returned the error in [`Report::error`].
    FailedAfterCancel,
    /// An async cleanup of a cancelled `AsyncScope`, awaited by the task it was spawned as,
    /// panicked. The panic was caught and dropped; the report's `Display` ends with its
    /// message, if it had one (a `&str` or a `String`, as `panic!` makes).
    PanickedAfterCancel,
    /// An async cleanup of a cancelled `AsyncScope` was dropped without being awaited: the
    /// crate was built without its `tokio` feature, which would have spawned it on the
    /// runtime.
    NotAwaitedWithoutTokio,
    /// An async cleanup of a cancelled `AsyncScope` was dropped without being awaited: the
    /// scope was dropped outside a tokio runtime, so there was nothing to spawn it on.
    NotAwaitedOutsideRuntime,
    /// An async cleanup of a cancelled `AsyncScope` was dropped without being awaited: the
    /// runtime shut down before the spawned task reached it.
    NotAwaitedAtShutdown,
    /// An async cleanup of a cancelled `AsyncScope` was dropped part-way: the runtime shut
    /// down while the spawned task was awaiting it.
    InterruptedAtShutdown,
}

/// One thing the crate could not return: what it was ([`kind`](Report::kind)), the line that
/// registered the cleanup ([`site`](Report::site)), and the cleanup's error, if it returned
/// one ([`error`](Report::error)). Handed to the [hook](set_hook); `Display` gives the message
/// that the default hook prints, without calling any user code.
pub struct Report<'a> {
    kind: ReportKind,
    site: &'static Location<'static>,
    error: Option<&'a (dyn Error + Send + Sync + 'static)>,
    /// The error's message, formatted under `catch_unwind` (`None` if its `Display`
    /// panicked), or the panic's message; `None` if there is neither.
    message: Option<String>,
}

impl<'a> Report<'a> {
    /// What was lost, and why.
    #[must_use]
    pub fn kind(&self) -> ReportKind {
        self.kind
    }

    /// Where the cleanup was registered.
    #[must_use]
    pub fn site(&self) -> &'static Location<'static> {
        self.site
    }

    /// The cleanup's error, for [`ErrorLostToPanic`](ReportKind::ErrorLostToPanic) and
    /// [`FailedAfterCancel`](ReportKind::FailedAfterCancel). Its `Display` is user code and
    /// may panic; the report's own `Display` already holds its message.
    #[must_use]
    pub fn error(&self) -> Option<&'a (dyn Error + Send + Sync + 'static)> {
        self.error
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let site = self.site;
        let cancelled = "it was cancelled (its AsyncScope, or the `Held::run_now_async` \
                         awaiting it, was dropped before it ended, or a sync `run_now`, which \
                         cannot await it, started it)";
        match self.kind {
            ReportKind::ErrorLostToPanic => write!(
                f,
                "the cleanup registered at {site} failed while a panic was unwinding, and \
                 nothing could return its error: "
            )?,
            ReportKind::FailedAfterCancel => write!(
                f,
                "the async cleanup registered at {site} failed after it was cancelled: "
            )?,
            ReportKind::PanickedAfterCancel => {
                write!(
                    f,
                    "the async cleanup registered at {site} panicked after it was cancelled"
                )?;
                return match &self.message {
                    Some(message) => write!(f, ": {message}"),
                    None => Ok(()),
                };
            }
            ReportKind::NotAwaitedWithoutTokio => {
                return write!(
                    f,
                    "the async cleanup registered at {site} was dropped without being awaited: \
                     {cancelled}; build scoped-defer with its `tokio` feature to have such \
                     cleanups spawned on the runtime"
                );
            }
            ReportKind::NotAwaitedOutsideRuntime => {
                return write!(
                    f,
                    "the async cleanup registered at {site} was dropped without being awaited: \
                     {cancelled} outside a tokio runtime, with nothing to spawn it on"
                );
            }
            ReportKind::NotAwaitedAtShutdown => {
                return write!(
                    f,
                    "the async cleanup registered at {site} was dropped without being awaited: \
                     {cancelled}, and the runtime shut down before its task awaited it"
                );
            }
            ReportKind::InterruptedAtShutdown => {
                return write!(
                    f,
                    "the async cleanup registered at {site} was dropped part-way, without being \
                     awaited to the end: {cancelled}, and the runtime shut down while its task \
                     was awaiting it"
                );
            }
        }
        match &self.message {
            Some(message) => f.write_str(message),
            None => f.write_str("(the error's Display panicked)"),
        }
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("kind", &self.kind)
            .field("site", &self.site)
            .field("message", &self.message)
            .finish()
    }
}

/// The hook's type, as [`set_hook`] takes it.
type Hook = dyn Fn(&Report<'_>) + Send + Sync + 'static;

/// The hook set by [`set_hook`]; `None` for the default. An `Arc`, so that a report calls the
/// hook without holding the lock: a hook may itself report, or set the hook.
static HOOK: RwLock<Option<Arc<Hook>>> = RwLock::new(None);

/// Makes `hook` receive every report from now on, on whichever thread the report happens,
/// in place of the one before (which is dropped). Like [`std::panic::set_hook`].
///
/// A hook that panics does not stop the report: the panic is caught and dropped, and the
/// report is written to standard error instead.
///
/// ```
/// use scoped_defer::report;
///
/// // Keep the default (standard error), and count what it writes.
/// static REPORTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// let default = report::take_hook();
/// report::set_hook(Box::new(move |report| {
///     REPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///     default(report);
/// }));
/// ```
pub fn set_hook(hook: Box<dyn Fn(&Report<'_>) + Send + Sync + 'static>) {
    let previous = HOOK
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(Arc::from(hook));
    drop(previous); // outside the lock: its captures are user code
}

/// Puts the default hook back, and returns the one that was set (or the default). Like
/// [`std::panic::take_hook`]: call the returned hook from a new one to keep what it does.
///
/// ```
/// use scoped_defer::report;
///
/// report::set_hook(Box::new(|report| println!("{report}")));
/// let mine = report::take_hook(); // reports go to standard error again
/// drop(mine);
/// ```
#[must_use = "the hook that was set is returned; dropping it drops the hook"]
pub fn take_hook() -> Box<dyn Fn(&Report<'_>) + Send + Sync + 'static> {
    let taken = HOOK.write().unwrap_or_else(PoisonError::into_inner).take();
    match taken {
        Some(hook) => Box::new(move |report: &Report<'_>| hook(report)),
        None => Box::new(default_hook),
    }
}

/// Hands a report to the hook. Never panics: the error's `Display`, the hook and the hook's
/// captures (dropped here if the hook was replaced meanwhile) are called under `catch_unwind`.
pub(crate) fn send(
    kind: ReportKind,
    site: &'static Location<'static>,
    error: Option<&(dyn Error + Send + Sync + 'static)>,
) {
    let report = Report {
        kind,
        site,
        error,
        message: error.and_then(message_of),
    };
    deliver(&report);
}

/// Reports that the async cleanup registered at `site` panicked with `payload` after it was
/// cancelled. Reads the payload's message without calling user code.
#[cfg(feature = "tokio")]
pub(crate) fn send_panicked(site: &'static Location<'static>, payload: &Payload) {
    let message = payload
        .downcast_ref::<&'static str>()
        .map(|message| (*message).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned());
    deliver(&Report {
        kind: ReportKind::PanickedAfterCancel,
        site,
        error: None,
        message,
    });
}

/// Hands `report` to the hook, under `catch_unwind`.
fn deliver(report: &Report<'_>) {
    let hook = HOOK.read().unwrap_or_else(PoisonError::into_inner).clone();
    // `hook` is moved in, so that it is dropped under the catch too.
    let delivered = catch_unwind(AssertUnwindSafe(|| match hook {
        Some(hook) => hook(report),
        None => default_hook(report),
    }));
    if let Err(payload) = delivered {
        drop_payload(payload);
        write_to_stderr(report);
    }
}

/// `error`'s message, or `None` if its `Display` panics (the panic is caught and dropped).
pub(crate) fn message_of(error: &(dyn Error + Send + Sync + 'static)) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| error.to_string()))
        .map_err(drop_payload)
        .ok()
}

/// Standard error, or with the `tracing` feature a `tracing` event if a subscriber is set.
fn default_hook(report: &Report<'_>) {
    #[cfg(feature = "tracing")]
    if !tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>()) {
        tracing::error!(
            target: "scoped_defer",
            kind = ?report.kind,
            site = %report.site,
            error = report.error.and(report.message.as_deref()),
            "{report}"
        );
        return;
    }
    write_to_stderr(report);
}

/// One line on standard error. Never `eprintln!`, which panics when the write fails: a failed
/// write is ignored, since there is nowhere left to report it.
fn write_to_stderr(report: &Report<'_>) {
    let line = alloc::format!("scoped-defer: {report}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
