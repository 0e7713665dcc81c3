//! Go's `recover`: what runs, and which panic surfaces, when cleanups and bodies panic. Rust's
//! counterpart of `recover()` is `std::panic::catch_unwind`.
//!
//! Usage: `cargo run --example recover`. Exits non-zero if any case differs from the rules:
//! every cleanup runs; the first panic surfaces; a panic of the body is never replaced by one
//! of a cleanup; nothing aborts.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use scoped_defer::scope;

type Log = RefCell<Vec<&'static str>>;

/// A case: its name, what it does, what should run, and which panic should surface.
type Case = (
    &'static str,
    fn(&Log),
    &'static [&'static str],
    Option<&'static str>,
);

/// Runs `f`, returning what it logged and the message of the panic that surfaced.
fn run(f: impl FnOnce(&Log)) -> (Vec<&'static str>, Option<String>) {
    let log = Log::default();
    let payload = panic::catch_unwind(AssertUnwindSafe(|| f(&log))).err();
    let message = payload.map(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "<other>".into())
    });
    (log.into_inner(), message)
}

fn main() -> ExitCode {
    panic::set_hook(Box::new(|_| {})); // every panic here is on purpose
    let cases: [Case; 4] = [
        (
            "a cleanup panics",
            |log| {
                scope(|s| {
                    s.defer(|| log.borrow_mut().push("cleanup 1"));
                    s.defer(|| {
                        log.borrow_mut().push("cleanup 2");
                        panic!("cleanup 2 panicked");
                    });
                    s.defer(|| log.borrow_mut().push("cleanup 3"));
                })
            },
            &["cleanup 3", "cleanup 2", "cleanup 1"],
            Some("cleanup 2 panicked"),
        ),
        (
            "two cleanups panic",
            |log| {
                scope(|s| {
                    s.defer(|| {
                        log.borrow_mut().push("cleanup 1");
                        panic!("cleanup 1 panicked");
                    });
                    s.defer(|| {
                        log.borrow_mut().push("cleanup 2");
                        panic!("cleanup 2 panicked");
                    });
                })
            },
            &["cleanup 2", "cleanup 1"],
            Some("cleanup 2 panicked"),
        ),
        (
            "the body panics",
            |log| {
                scope(|s| {
                    s.defer(|| log.borrow_mut().push("cleanup"));
                    log.borrow_mut().push("body");
                    panic!("body panicked");
                })
            },
            &["body", "cleanup"],
            Some("body panicked"),
        ),
        (
            "the body and a cleanup panic",
            |log| {
                scope(|s| {
                    s.defer(|| log.borrow_mut().push("cleanup 1"));
                    s.defer(|| {
                        log.borrow_mut().push("cleanup 2");
                        panic!("cleanup 2 panicked");
                    });
                    panic!("body panicked");
                })
            },
            &["cleanup 2", "cleanup 1"],
            Some("body panicked"),
        ),
    ];
    let mut ok = true;
    for (name, case, expected_log, expected_panic) in cases {
        let (log, surfaced) = run(case);
        println!("{name:<30} ran {log:?}, surfaced: {surfaced:?}");
        ok &= log == expected_log && surfaced.as_deref() == expected_panic;
    }
    if ok {
        println!(
            "\nEvery cleanup ran; the first panic surfaced; the body's panic was never replaced."
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: a case broke the rules above");
        ExitCode::FAILURE
    }
}
