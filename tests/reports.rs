//! Reports of what the crate cannot return: every kind reaches a custom hook with its fields,
//! and nothing the crate calls while reporting (standard error, a `Display`, the hook, an
//! error handler's captures) can panic out of it or abort the process.
//!
//! What used to abort, or needs a broken standard error, runs in a child process, so that a
//! regression fails one test instead of taking the test binary down.
#![cfg(all(feature = "std", not(miri)))] // child processes, pipes and tokio's runtime; no unsafe code is involved

mod common;

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{catch_expected, in_child, quiet_panics};
use scoped_defer::report::{self, Report, ReportKind};
use scoped_defer::{AsyncScope, Held, Scope, async_scope, try_async_scope};

/// A report as the hook saw it, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: ReportKind,
    file: &'static str,
    line: u32,
    /// The error's message, `"<Display panicked>"` if formatting it panicked.
    error: Option<String>,
}

impl Seen {
    fn new(kind: ReportKind, line: u32, error: Option<&str>) -> Self {
        Seen {
            kind,
            file: file!(),
            line,
            error: error.map(str::to_owned),
        }
    }
}

thread_local! {
    /// The reports made on this thread while [`recorded`] runs, with their `Display` and
    /// `Debug`.
    static RECORDING: RefCell<Option<Vec<(Seen, String, String)>>> = const { RefCell::new(None) };
    /// Makes the hook panic, with a payload that panics when dropped, after recording.
    static HOOK_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` and returns the reports it made on this thread, with their `Display` and `Debug`. The hook
/// is process-wide: reports from other threads, or from a thread that is not recording, go to
/// the default hook as before.
fn recorded(f: impl FnOnce()) -> Vec<(Seen, String, String)> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = report::take_hook();
        report::set_hook(Box::new(move |report: &Report<'_>| {
            let recording = RECORDING.with(|r| r.borrow().is_some());
            if !recording {
                return default(report);
            }
            let error = report.error().map(|error| {
                catch_expected(|| error.to_string()).unwrap_or_else(|_| "<Display panicked>".into())
            });
            let seen = Seen {
                kind: report.kind(),
                file: report.site().file(),
                line: report.site().line(),
                error,
            };
            RECORDING.with(|r| {
                r.borrow_mut().as_mut().unwrap().push((
                    seen,
                    report.to_string(),
                    format!("{report:?}"),
                ))
            });
            if HOOK_PANICS.get() {
                std::panic::panic_any(PanicsOnDrop);
            }
        }));
    });
    quiet_panics();
    RECORDING.set(Some(Vec::new()));
    f();
    RECORDING.take().unwrap()
}

/// Just the fields of what [`recorded`] returns.
fn fields(reports: &[(Seen, String, String)]) -> Vec<Seen> {
    reports.iter().map(|(seen, ..)| seen.clone()).collect()
}

/// A value whose drop panics: a panic payload, or a capture of an error handler.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("dropped"); // during an unwind, an abort unless the crate catches it
    }
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct DisplayPanics;

impl fmt::Display for DisplayPanics {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("Display panicked")
    }
}

impl Error for DisplayPanics {}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Polls `future` once, outside any runtime unless one is entered, and checks it is pending.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) {
    let waker = std::task::Waker::noop();
    let polled = future.poll(&mut std::task::Context::from_waker(waker));
    assert!(polled.is_pending());
}

// ---- Every kind reaches the hook, field by field. ----

/// Before: one line on standard error naming only the first error's line.
#[test]
fn a_scope_dropped_during_an_unwind_reports_each_lost_error_with_its_own_line() {
    let mut lines = (0, 0);
    let reports = recorded(|| {
        let panicked = catch_expected(|| {
            let scope = Scope::new();
            lines.0 = line!() + 1;
            scope.defer_fallible(|| Err::<(), _>("flush failed"));
            lines.1 = line!() + 1;
            scope.defer_fallible(|| Err::<(), _>("unlock failed"));
            panic!("the body failed");
        });
        assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
    });
    assert_eq!(
        fields(&reports),
        [
            Seen::new(ReportKind::ErrorLostToPanic, lines.1, Some("unlock failed")),
            Seen::new(ReportKind::ErrorLostToPanic, lines.0, Some("flush failed")),
        ]
    );
    let expected = format!("tests/reports.rs:{}:", lines.1);
    assert!(reports[0].1.contains(&expected), "{}", reports[0].1);
    assert!(
        reports[0]
            .2
            .starts_with("Report { kind: ErrorLostToPanic, site: ")
            && reports[0]
                .2
                .ends_with(r#"message: Some("unlock failed") }"#),
        "{}",
        reports[0].2
    );
    assert!(
        reports[0]
            .1
            .ends_with("nothing could return its error: unlock failed")
    );
}

/// A cleanup's panic keeps `finish` from returning the other's error. Before: standard error.
#[test]
fn an_error_lost_to_a_cleanup_panic_is_reported() {
    let mut line = 0;
    let reports = recorded(|| {
        let scope = Scope::new();
        line = line!() + 1;
        scope.defer_fallible(|| Err::<(), _>("flush failed"));
        scope.defer(|| panic!("cleanup panicked"));
        let panicked = catch_expected(|| scope.finish());
        assert_eq!(message(&*panicked.unwrap_err()), "cleanup panicked");
    });
    assert_eq!(
        fields(&reports),
        [Seen::new(
            ReportKind::ErrorLostToPanic,
            line,
            Some("flush failed")
        )]
    );
}

/// Before: standard error, naming only the first error's line.
#[test]
fn async_errors_lost_to_a_body_panic_are_reported() {
    let mut lines = (0, 0);
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        let panicked = catch_expected(|| {
            runtime.block_on(try_async_scope(async |s| -> Result<(), &str> {
                lines.0 = line!() + 1;
                s.defer_async_fallible(async { Err::<(), _>("flush failed") });
                lines.1 = line!() + 1;
                s.defer_async_fallible(async { Err::<(), _>("unlock failed") });
                panic!("the body failed")
            }))
        });
        assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
    });
    assert_eq!(
        fields(&reports),
        [
            Seen::new(ReportKind::ErrorLostToPanic, lines.1, Some("unlock failed")),
            Seen::new(ReportKind::ErrorLostToPanic, lines.0, Some("flush failed")),
        ]
    );
}

/// `AsyncScope::finish` with a cleanup that panics: the other's error cannot be returned.
#[test]
fn async_errors_lost_to_a_cleanup_panic_are_reported() {
    let mut line = 0;
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        let scope = AsyncScope::new();
        line = line!() + 1;
        scope.defer_async_fallible(async { Err::<(), _>("flush failed") });
        scope.defer_async(async { panic!("cleanup panicked") });
        let panicked = catch_expected(|| runtime.block_on(scope.finish()));
        assert_eq!(message(&*panicked.unwrap_err()), "cleanup panicked");
    });
    assert_eq!(
        fields(&reports),
        [Seen::new(
            ReportKind::ErrorLostToPanic,
            line,
            Some("flush failed")
        )]
    );
}

/// What a cleanup handed over outside a runtime is reported as: with the `tokio` feature,
/// that there was no runtime to spawn it on; without, that the feature would have.
fn not_awaited_outside_a_runtime() -> ReportKind {
    if cfg!(feature = "tokio") {
        ReportKind::NotAwaitedOutsideRuntime
    } else {
        ReportKind::NotAwaitedWithoutTokio
    }
}

/// Outside a runtime nothing can await a cancelled scope's futures: each is reported, the
/// one in flight first, then the rest last registered first. Without the `tokio` feature the
/// report names it. Before: standard error, without the remedy.
#[test]
fn a_cancelled_scope_reports_each_future_it_could_not_await() {
    let mut lines = (0, 0, 0);
    let captured = Arc::new(());
    let reports = recorded(|| {
        let mut scope = Box::pin(async_scope(async |s| {
            let counted = Arc::clone(&captured);
            lines.0 = line!() + 1;
            s.defer_async(async move { drop(counted) });
            lines.1 = line!() + 1;
            s.hold_async((), |()| async {});
            lines.2 = line!() + 1;
            s.defer_async(async {});
            std::future::pending::<()>().await;
        }));
        poll_once(scope.as_mut());
        drop(scope);
    });
    let kind = not_awaited_outside_a_runtime();
    assert_eq!(
        fields(&reports),
        [
            Seen::new(kind, lines.2, None),
            Seen::new(kind, lines.1, None),
            Seen::new(kind, lines.0, None),
        ]
    );
    assert_eq!(Arc::strong_count(&captured), 1, "the future was dropped");
    for (_, text, _) in &reports {
        assert!(text.contains("dropped without being awaited"), "{text}");
        assert_eq!(
            text.contains("`tokio` feature"),
            cfg!(not(feature = "tokio")),
            "{text}"
        );
    }
}

/// A `Held::run_now_async` dropped part-way hands its cleanup over as a cancelled scope does,
/// and the report says so rather than blaming the scope, which is still alive.
#[test]
fn a_dropped_run_now_async_reports_its_cleanup_as_cancelled() {
    let mut line = 0;
    let reports = recorded(|| {
        let scope = AsyncScope::new();
        line = line!() + 1;
        let held = scope.hold_async_entry((), |()| std::future::pending::<()>());
        let mut run_now = Box::pin(Held::run_now_async(held));
        poll_once(run_now.as_mut());
        drop(run_now);
        assert!(scope.is_empty(), "the entry left its scope");
    });
    let kind = not_awaited_outside_a_runtime();
    assert_eq!(fields(&reports), [Seen::new(kind, line, None)]);
    let text = &reports[0].1;
    assert!(text.contains("`Held::run_now_async`"), "{text}");
    assert!(!text.contains("its AsyncScope was cancelled"), "{text}");
}

/// A sync `Held::run_now` on an `AsyncScope`'s async cleanup, outside a runtime, hands it
/// over too; the report names the sync `run_now` among the causes, not only a dropped scope
/// (this one stays alive).
#[test]
fn a_sync_run_now_of_an_async_cleanup_is_named_in_its_report() {
    let mut line = 0;
    let reports = recorded(|| {
        let scope = AsyncScope::new();
        line = line!() + 1;
        let held = scope.hold_async_entry((), |()| async {});
        Held::run_now(held);
        assert!(scope.is_empty(), "the entry left its scope");
    });
    let kind = not_awaited_outside_a_runtime();
    assert_eq!(fields(&reports), [Seen::new(kind, line, None)]);
    let text = &reports[0].1;
    assert!(text.contains("a sync `run_now`"), "{text}");
}

/// The issue's new user: a tokio program built without the `tokio` feature. Inside a
/// runtime, the report must still say what would have awaited the cleanup.
#[cfg(not(feature = "tokio"))]
#[test]
fn without_the_tokio_feature_a_cancelled_scope_names_the_feature_inside_a_runtime() {
    let mut line = 0;
    let reports = recorded(|| {
        current_thread_runtime().block_on(async {
            let mut scope = Box::pin(async_scope(async |s| {
                line = line!() + 1;
                s.defer_async(async {});
                std::future::pending::<()>().await;
            }));
            poll_once(scope.as_mut());
        });
    });
    assert_eq!(
        fields(&reports),
        [Seen::new(ReportKind::NotAwaitedWithoutTokio, line, None)]
    );
    assert!(reports[0].1.contains("`tokio` feature"), "{}", reports[0].1);
}

/// The task of a cancelled scope awaits its futures: one fails, one panics. Before: standard
/// error.
#[cfg(feature = "tokio")]
#[test]
fn the_task_of_a_cancelled_scope_reports_what_failed_and_what_panicked() {
    let mut lines = (0, 0);
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        catch_expected(|| {
            runtime.block_on(async {
                let mut scope = Box::pin(async_scope(async |s| {
                    lines.0 = line!() + 1;
                    s.defer_async_fallible(async { Err::<(), _>("flush failed") });
                    lines.1 = line!() + 1;
                    s.defer_async(async { panic!("cleanup panicked") });
                    std::future::pending::<()>().await;
                }));
                poll_once(scope.as_mut());
                drop(scope); // cancelled: both are spawned as one task
                while RECORDING.with(|r| r.borrow().as_ref().unwrap().len()) < 2 {
                    tokio::task::yield_now().await;
                }
            });
        })
        .unwrap();
    });
    assert_eq!(
        fields(&reports),
        [
            Seen::new(ReportKind::PanickedAfterCancel, lines.1, None),
            Seen::new(ReportKind::FailedAfterCancel, lines.0, Some("flush failed")),
        ]
    );
    // The panic's message, as `panic!` makes it (a `&str`, or a `String` when formatted).
    assert!(
        reports[0]
            .1
            .ends_with("panicked after it was cancelled: cleanup panicked"),
        "{}",
        reports[0].1
    );
}

/// A cleanup of a cancelled scope panics with a formatted message (a `String` payload), or
/// with a payload that is not a message at all, which the report leaves out.
#[cfg(feature = "tokio")]
#[test]
fn a_panic_after_cancel_is_reported_with_its_message_if_it_has_one() {
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        catch_expected(|| {
            runtime.block_on(async {
                let mut scope = Box::pin(async_scope(async |s| {
                    let code = 7;
                    s.defer_async(async move { panic!("exit code {code}") });
                    s.defer_async(async { std::panic::panic_any(42_u8) });
                    std::future::pending::<()>().await;
                }));
                poll_once(scope.as_mut());
                drop(scope);
                while RECORDING.with(|r| r.borrow().as_ref().unwrap().len()) < 2 {
                    tokio::task::yield_now().await;
                }
            });
        })
        .unwrap();
    });
    let displayed: Vec<&str> = reports.iter().map(|(_, text, _)| text.as_str()).collect();
    assert!(
        displayed[0].ends_with("panicked after it was cancelled"),
        "{}",
        displayed[0]
    );
    assert!(
        displayed[1].ends_with("panicked after it was cancelled: exit code 7"),
        "{}",
        displayed[1]
    );
    assert!(
        reports[1].2.ends_with(r#"message: Some("exit code 7") }"#),
        "{}",
        reports[1].2
    );
}

/// The runtime shuts down while the task of a cancelled scope awaits a future: that one is
/// reported as interrupted, the one behind it as not awaited. Before: the one in flight was
/// dropped in silence.
#[cfg(feature = "tokio")]
#[test]
fn runtime_shutdown_reports_the_future_in_flight_and_those_behind_it() {
    let mut lines = (0, 0);
    let started = Arc::new(AtomicUsize::new(0));
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        runtime.block_on(async {
            let mut scope = Box::pin(async_scope(async |s| {
                let in_flight = Arc::clone(&started);
                lines.0 = line!() + 1;
                s.defer_async(async {});
                lines.1 = line!() + 1;
                s.defer_async(async move {
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                });
                std::future::pending::<()>().await;
            }));
            poll_once(scope.as_mut());
            drop(scope);
            while started.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        });
        drop(runtime); // the task is awaiting the second future
    });
    assert_eq!(
        fields(&reports),
        [
            Seen::new(ReportKind::InterruptedAtShutdown, lines.1, None),
            Seen::new(ReportKind::NotAwaitedAtShutdown, lines.0, None),
        ]
    );
    assert!(
        reports[0].1.contains("dropped part-way"),
        "{}",
        reports[0].1
    );
}

/// A cleanup that the scope was already awaiting when it was cancelled is part-way too: if the
/// runtime shuts down before the task that took it over finishes it, it is reported as
/// interrupted, not as never awaited. (Before: the task queued it with the others.)
#[cfg(feature = "tokio")]
#[test]
fn runtime_shutdown_reports_a_cleanup_the_scope_was_awaiting_as_interrupted() {
    let mut lines = (0, 0);
    let reports = recorded(|| {
        let runtime = current_thread_runtime();
        runtime.block_on(async {
            let mut scope = Box::pin(async_scope(async |s| {
                lines.0 = line!() + 1;
                s.defer_async(async {});
                lines.1 = line!() + 1;
                s.defer_async(std::future::pending::<()>());
            }));
            // The body ends, the drain awaits the second cleanup: cancelled there.
            poll_once(scope.as_mut());
            drop(scope);
        });
        drop(runtime); // before the task was ever polled
    });
    assert_eq!(
        fields(&reports),
        [
            Seen::new(ReportKind::InterruptedAtShutdown, lines.1, None),
            Seen::new(ReportKind::NotAwaitedAtShutdown, lines.0, None),
        ]
    );
}

// ---- User code called while reporting. ----

/// Before: "panic in a destructor during cleanup", an abort.
#[test]
fn an_error_whose_display_panics_is_reported_without_its_text_during_an_unwind() {
    in_child(
        "an_error_whose_display_panics_is_reported_without_its_text_during_an_unwind",
        || {
            let mut line = 0;
            let reports = recorded(|| {
                let panicked = catch_expected(|| {
                    let scope = Scope::new();
                    line = line!() + 1;
                    scope.defer_fallible(|| Err::<(), _>(DisplayPanics));
                    panic!("the body failed");
                });
                assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
            });
            assert_eq!(
                fields(&reports),
                [Seen::new(
                    ReportKind::ErrorLostToPanic,
                    line,
                    Some("<Display panicked>")
                )]
            );
            assert!(reports[0].1.ends_with("(the error's Display panicked)"));
        },
    );
}

/// The crate's own panic for an error nobody can return formats the error. Before: the panic
/// hook called the panicking `Display` and the process aborted ("panicked while processing
/// panic").
#[test]
fn the_panic_for_an_unreturned_error_survives_a_panicking_display() {
    in_child(
        "the_panic_for_an_unreturned_error_survives_a_panicking_display",
        || {
            quiet_panics();
            let line = line!() + 4;
            let panicked = catch_expected(|| {
                let scope = Scope::new();
                scope.defer_fallible(|| Err::<(), _>(DisplayPanics));
                scope.defer_fallible(|| Err::<(), _>("unlock failed"));
            });
            let message = message(&*panicked.unwrap_err());
            assert!(
                message.starts_with(
                    "2 cleanups failed: unlock failed; (the error's Display panicked) \
                     (registered at tests/reports.rs:"
                ),
                "{message}"
            );
            assert!(message.contains(&format!(":{line}:")), "{message}");
        },
    );
}

/// Before: a panicking hook was not possible; a report that panics on its way out during an
/// unwind aborts. The hook's payload panics when dropped, too.
#[cfg(unix)]
#[test]
fn a_hook_that_panics_does_not_stop_the_report_or_the_original_panic() {
    in_child(
        "a_hook_that_panics_does_not_stop_the_report_or_the_original_panic",
        || {
            let mut reports = Vec::new();
            let written = written_to_stderr(|| {
                reports = recorded(|| {
                    HOOK_PANICS.set(true);
                    let panicked = catch_expected(|| {
                        let scope = Scope::new();
                        scope.defer_fallible(|| Err::<(), _>("flush failed"));
                        scope.defer_fallible(|| Err::<(), _>("unlock failed"));
                        panic!("the body failed");
                    });
                    HOOK_PANICS.set(false);
                    assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
                });
            });
            let errors: Vec<_> = fields(&reports).into_iter().map(|s| s.error).collect();
            assert_eq!(
                errors,
                [Some("unlock failed".into()), Some("flush failed".into())],
                "the first panicking hook did not stop the second report"
            );
            // What the hook failed to deliver went to standard error.
            let lines: Vec<_> = written
                .lines()
                .filter(|l| l.starts_with("scoped-defer: "))
                .collect();
            assert_eq!(lines.len(), 2, "{written}");
            assert!(lines[0].ends_with("unlock failed") && lines[1].ends_with("flush failed"));
        },
    );
}

/// Before: the handler was freed with the scope's storage during the unwind of the cleanup's
/// panic, and its captures' panic aborted the process.
#[test]
fn a_handler_whose_captures_panic_on_drop_does_not_abort_after_a_panicking_cleanup() {
    in_child(
        "a_handler_whose_captures_panic_on_drop_does_not_abort_after_a_panicking_cleanup",
        || {
            quiet_panics();
            let handled = RefCell::new(Vec::new());
            let panicked = catch_expected(|| {
                let mut scope = Scope::new();
                let (captured, handled) = (PanicsOnDrop, &handled);
                scope.set_error_handler(move |error| {
                    let _keep = &captured;
                    handled.borrow_mut().push(error.to_string());
                });
                scope.defer_fallible(|| Err::<(), _>("flush failed"));
                scope.defer(|| panic!("cleanup panicked"));
            });
            assert_eq!(message(&*panicked.unwrap_err()), "cleanup panicked");
            assert_eq!(*handled.borrow(), ["flush failed"]);
        },
    );
}

/// Before: an abort, whether or not the scope still held a closure.
#[test]
fn a_handler_whose_captures_panic_on_drop_does_not_abort_a_scope_dropped_during_an_unwind() {
    in_child(
        "a_handler_whose_captures_panic_on_drop_does_not_abort_a_scope_dropped_during_an_unwind",
        || {
            quiet_panics();
            for pending in [false, true] {
                let ran = Cell::new(false);
                let panicked = catch_expected(|| {
                    let mut scope = Scope::new();
                    let captured = PanicsOnDrop;
                    scope.set_error_handler(move |_| {
                        let _keep = &captured;
                    });
                    if pending {
                        scope.defer(|| ran.set(true));
                    }
                    panic!("the body failed");
                });
                assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
                assert_eq!(ran.get(), pending);
            }
            // Not unwinding, the captures' panic is the scope's own, as for any value.
            let panicked = catch_expected(|| {
                let mut scope = Scope::new();
                let captured = PanicsOnDrop;
                scope.set_error_handler(move |_| {
                    let _keep = &captured;
                });
            });
            assert_eq!(message(&*panicked.unwrap_err()), "dropped");
        },
    );
}

// ---- The default hook and a broken standard error. ----

/// Makes writes to standard error fail, as for a service whose log pipe closed: fd 2 becomes
/// a pipe whose reading end is closed (EPIPE; Rust ignores SIGPIPE).
#[cfg(unix)]
fn break_stderr() {
    use std::io::Write;
    let mut fds = [0; 2];
    // SAFETY: plain descriptor calls on descriptors this function owns, and fd 2, which it
    // replaces on purpose.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        assert_eq!(libc::close(fds[0]), 0);
        assert_eq!(libc::dup2(fds[1], 2), 2);
        assert_eq!(libc::close(fds[1]), 0);
    }
    assert!(
        std::io::stderr().write_all(b"x").is_err(),
        "the write to standard error should fail"
    );
}

/// What `f` writes to standard error (file descriptor 2), which it is kept from while it runs.
#[cfg(unix)]
fn written_to_stderr(f: impl FnOnce()) -> String {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: plain descriptor calls: fd 2 is saved, replaced by the pipe's writing end for
    // the duration of `f`, then put back, which leaves the reading end the only one open.
    let (saved, mut reading) = unsafe {
        let saved = libc::dup(2);
        assert!(saved >= 0);
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        assert_eq!(libc::dup2(fds[1], 2), 2);
        assert_eq!(libc::close(fds[1]), 0);
        (saved, std::fs::File::from_raw_fd(fds[0]))
    };
    f();
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::dup2(saved, 2), 2);
        assert_eq!(libc::close(saved), 0);
    }
    let mut written = String::new();
    reading.read_to_string(&mut written).unwrap();
    written
}

/// Before: `eprintln!` panicked during the unwind, and the process aborted.
#[cfg(unix)]
#[test]
fn a_broken_stderr_does_not_abort_a_scope_dropped_during_an_unwind() {
    in_child(
        "a_broken_stderr_does_not_abort_a_scope_dropped_during_an_unwind",
        || {
            break_stderr();
            let panicked = std::panic::catch_unwind(|| {
                let scope = Scope::new();
                scope.defer_fallible(|| Err::<(), _>("flush failed"));
                panic!("the body failed");
            });
            assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
        },
    );
}

/// Before: an abort.
#[cfg(unix)]
#[test]
fn a_broken_stderr_does_not_abort_a_cancelled_async_scope_dropped_during_an_unwind() {
    in_child(
        "a_broken_stderr_does_not_abort_a_cancelled_async_scope_dropped_during_an_unwind",
        || {
            break_stderr();
            let panicked = std::panic::catch_unwind(|| {
                let scope = AsyncScope::new();
                scope.defer_async(async {});
                panic!("the body failed");
            });
            assert_eq!(message(&*panicked.unwrap_err()), "the body failed");
        },
    );
}

/// Before: the drop panicked with "failed printing to stderr", and the futures queued behind
/// the first were dropped unreported.
#[cfg(unix)]
#[test]
fn a_broken_stderr_does_not_make_a_cancelled_async_scope_panic() {
    in_child(
        "a_broken_stderr_does_not_make_a_cancelled_async_scope_panic",
        || {
            break_stderr();
            let captured = Arc::new(());
            let scope = AsyncScope::new();
            for _ in 0..3 {
                let captured = Arc::clone(&captured);
                scope.defer_async(async move { drop(captured) });
            }
            drop(scope);
            assert_eq!(Arc::strong_count(&captured), 1, "every future was dropped");
        },
    );
}

/// The default hook writes to standard error, and a taken hook can be put back. Before:
/// there was no hook.
#[test]
fn take_hook_restores_the_default_and_returns_the_hook() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn cancel_one() {
        let scope = AsyncScope::new();
        scope.defer_async(async {});
    }
    in_child(
        "take_hook_restores_the_default_and_returns_the_hook",
        || {
            report::set_hook(Box::new(|_| {
                CALLS.fetch_add(1, Ordering::Relaxed);
            }));
            cancel_one();
            assert_eq!(CALLS.load(Ordering::Relaxed), 1);
            let taken = report::take_hook();
            cancel_one(); // to standard error
            assert_eq!(CALLS.load(Ordering::Relaxed), 1);
            report::set_hook(taken);
            cancel_one();
            assert_eq!(CALLS.load(Ordering::Relaxed), 2);
            drop(report::take_hook());
        },
    );
}

/// With the `tracing` feature and a subscriber, the default hook emits an `error!` event
/// whose fields are the report's.
#[cfg(feature = "tracing")]
#[test]
fn with_the_tracing_feature_the_default_hook_emits_an_event_with_fields() {
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    /// An event's level, target and fields (name, value).
    type Recorded = (Level, String, Vec<(String, String)>);

    /// Keeps each event.
    #[derive(Default)]
    struct Events(Mutex<Vec<Recorded>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl Subscriber for &'static Events {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            let metadata = event.metadata();
            let entry = (*metadata.level(), metadata.target().to_owned(), fields.0);
            self.0.lock().unwrap().push(entry);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    in_child(
        "with_the_tracing_feature_the_default_hook_emits_an_event_with_fields",
        || {
            let events: &'static Events = Box::leak(Box::default());
            let line = line!() + 4;
            tracing::subscriber::with_default(events, || {
                let panicked = std::panic::catch_unwind(|| {
                    let scope = Scope::new();
                    scope.defer_fallible(|| Err::<(), _>("flush failed"));
                    panic!("the body failed");
                });
                assert!(panicked.is_err());
            });
            let events = events.0.lock().unwrap();
            assert_eq!(events.len(), 1);
            let (level, target, fields) = &events[0];
            assert_eq!((*level, target.as_str()), (Level::ERROR, "scoped_defer"));
            let field = |name: &str| {
                let found = fields.iter().find(|(n, _)| n == name);
                found.map(|(_, value)| value.clone()).unwrap_or_default()
            };
            assert_eq!(field("kind"), "ErrorLostToPanic");
            assert!(field("site").starts_with(&format!("tests/reports.rs:{line}:")));
            assert_eq!(field("error"), "flush failed");
            assert!(field("message").ends_with("flush failed"), "{fields:?}");
        },
    );
}

/// Before: the errors that a panic keeps from being returned were reported, then dropped
/// where a panic of their drop aborted the process (during the body's unwind), or replaced
/// the panic that wins (a cleanup's, resumed by `finish`; the body's, in `async_scope`).
/// Now each such drop's panic is caught: the winning panic resumes, and each error is dropped
/// once.
#[test]
fn an_error_whose_drop_panics_neither_aborts_nor_replaces_the_panic_that_wins() {
    in_child(
        "an_error_whose_drop_panics_neither_aborts_nor_replaces_the_panic_that_wins",
        || {
            quiet_panics();
            static DROPS: AtomicUsize = AtomicUsize::new(0);
            let failing = || async { Err::<(), _>(common::DropPanics(&DROPS)) };
            let runtime = current_thread_runtime();
            type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);
            let cases: [Case<'_>; 6] = [
                (
                    "body failed",
                    Box::new(|| {
                        let scope = Scope::new();
                        scope.defer_fallible(|| Err::<(), _>(common::DropPanics(&DROPS)));
                        panic!("body failed");
                    }),
                ),
                (
                    "body failed",
                    Box::new(|| {
                        let _ = scoped_defer::try_scope(|s| {
                            s.defer_fallible(|| Err::<(), _>(common::DropPanics(&DROPS)));
                            panic!("body failed");
                            #[allow(unreachable_code)]
                            Ok::<(), &str>(())
                        });
                    }),
                ),
                (
                    "cleanup panicked",
                    Box::new(|| {
                        let scope = Scope::new();
                        scope.defer_fallible(|| Err::<(), _>(common::DropPanics(&DROPS)));
                        scope.defer(|| panic!("cleanup panicked"));
                        let _ = scope.finish();
                    }),
                ),
                (
                    "cleanup panicked",
                    Box::new(|| {
                        let scope = AsyncScope::new();
                        scope.defer_async_fallible(failing());
                        scope.defer(|| panic!("cleanup panicked"));
                        let _ = runtime.block_on(scope.finish());
                    }),
                ),
                (
                    "body failed",
                    Box::new(|| {
                        runtime.block_on(async_scope(async |s| {
                            s.defer_async_fallible(failing());
                            panic!("body failed");
                        }));
                    }),
                ),
                // Not unwinding, and nothing to return the error: the panic that says so, made
                // after the error is dropped (before, its drop in that panic's unwind aborted).
                (
                    "cleanup failed: close failed",
                    Box::new(|| {
                        let scope = Scope::new();
                        scope.defer_fallible(|| Err::<(), _>(common::DropPanics(&DROPS)));
                    }),
                ),
            ];
            for (i, (expected, case)) in cases.iter().enumerate() {
                let panicked = catch_expected(case).expect_err("the case panics");
                assert!(
                    message(&*panicked).starts_with(expected),
                    "case {i}: {:?}",
                    message(&*panicked)
                );
                assert_eq!(
                    DROPS.load(Ordering::SeqCst),
                    i + 1,
                    "case {i}: dropped once"
                );
            }
        },
    );
}

/// Before: the task that awaits a cancelled scope's cleanups dropped a failed one's error
/// outside any catch: its drop's panic ended the task, the cleanups queued behind it were
/// never awaited, and they were reported as left at a runtime shutdown that never happened.
#[cfg(feature = "tokio")]
#[test]
fn a_cancelled_scope_s_task_goes_on_past_an_error_whose_drop_panics() {
    in_child(
        "a_cancelled_scope_s_task_goes_on_past_an_error_whose_drop_panics",
        || {
            quiet_panics();
            static DROPS: AtomicUsize = AtomicUsize::new(0);
            let ran = Arc::new(AtomicUsize::new(0));
            let runtime = current_thread_runtime();
            let reports = recorded(|| {
                runtime.block_on(async {
                    let scope = AsyncScope::new();
                    let first = Arc::clone(&ran);
                    scope.defer_async(async move {
                        first.fetch_add(1, Ordering::SeqCst);
                    });
                    scope.defer_async_fallible(async { Err::<(), _>(common::DropPanics(&DROPS)) });
                    drop(scope);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                });
            });
            assert_eq!(
                ran.load(Ordering::SeqCst),
                1,
                "the first cleanup was awaited"
            );
            assert_eq!(DROPS.load(Ordering::SeqCst), 1);
            assert_eq!(
                fields(&reports)
                    .iter()
                    .map(|seen| seen.kind)
                    .collect::<Vec<_>>(),
                [ReportKind::FailedAfterCancel],
            );
        },
    );
}
