//! Outcome-aware cleanups: `defer_on_error` and `defer_on_success` follow how the body ended,
//! never `thread::panicking()` alone.
mod common;

use std::cell::RefCell;

use common::{panic_message, quiet_panics};
use scoped_defer::{Scope, try_for_each_scoped, try_scope};

type Log = RefCell<Vec<&'static str>>;

fn register<'a>(s: &mut Scope<'a>, log: &'a Log) {
    s.defer(|| log.borrow_mut().push("always"));
    s.defer_on_error(|| log.borrow_mut().push("on error"));
    s.defer_on_success(|| log.borrow_mut().push("on success"));
}

#[test]
fn try_scope_runs_success_cleanups_when_the_body_returns_ok() {
    let log = Log::default();
    let result = try_scope(|s| {
        register(s, &log);
        Ok::<_, ()>(1)
    });
    assert_eq!(result.unwrap(), 1);
    assert_eq!(*log.borrow(), ["on success", "always"]);
}

#[test]
fn try_scope_runs_error_cleanups_when_the_body_returns_err() {
    let log = Log::default();
    let result = try_scope(|s| {
        register(s, &log);
        Err::<(), _>("failed")
    });
    assert_eq!(result.unwrap_err().body_error(), Some(&"failed"));
    assert_eq!(*log.borrow(), ["on error", "always"]);
}

#[test]
fn try_scope_runs_error_cleanups_when_the_body_panics() {
    quiet_panics();
    let log = Log::default();
    let message = panic_message(|| {
        let _ = try_scope(|s| -> Result<(), ()> {
            register(s, &log);
            panic!("body");
        });
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert_eq!(*log.borrow(), ["on error", "always"]);
}

#[cfg(feature = "std")] // without `std` a plain scope cannot tell that it is unwinding
#[test]
fn a_plain_scope_succeeds_when_dropped_normally_and_fails_when_unwound() {
    quiet_panics();
    let log = Log::default();
    {
        let mut scope: Scope<'_> = Scope::new();
        register(&mut scope, &log);
    }
    assert_eq!(*log.borrow(), ["on success", "always"]);

    log.borrow_mut().clear();
    let message = panic_message(|| {
        let mut scope: Scope<'_> = Scope::new();
        register(&mut scope, &log);
        panic!("body");
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert_eq!(*log.borrow(), ["on error", "always"]);
}

/// Uses a scope inside a destructor that runs during an unwind, and leaves it normally.
struct ScopeInDrop<'a> {
    log: &'a Log,
}

impl Drop for ScopeInDrop<'_> {
    fn drop(&mut self) {
        assert!(std::thread::panicking());
        let mut scope: Scope<'_> = Scope::new();
        register(&mut scope, self.log);
    }
}

#[test]
fn an_outer_unwind_does_not_make_a_scope_fail() {
    quiet_panics();
    let log = Log::default();
    let message = panic_message(|| {
        let _cleanup = ScopeInDrop { log: &log };
        panic!("outer");
    });
    assert_eq!(message.as_deref(), Some("outer"));
    assert_eq!(
        *log.borrow(),
        ["on success", "always"],
        "the scope itself was left normally"
    );
}

/// A setup of three steps, each undone only if a later step fails.
fn set_up<'a>(
    log: &'a Log,
    fail_at: Option<u32>,
) -> Result<Scope<'a>, scoped_defer::ScopeError<String>> {
    try_scope(|s| {
        for step in 1..=3u32 {
            if fail_at == Some(step) {
                return Err(format!("step {step} failed"));
            }
            log.borrow_mut()
                .push(["do 1", "do 2", "do 3"][step as usize - 1]);
            s.defer_on_error(move || {
                log.borrow_mut()
                    .push(["undo 1", "undo 2", "undo 3"][step as usize - 1])
            });
        }
        // Success: hand the cleanups of a working setup to the caller.
        let teardown: Scope<'a> = Scope::new();
        teardown.defer(|| log.borrow_mut().push("teardown"));
        Ok(teardown)
    })
}

#[test]
fn a_failed_setup_rolls_back_only_the_steps_done() {
    let log = Log::default();
    let error = set_up(&log, Some(3)).unwrap_err();
    assert_eq!(
        error.body_error().map(String::as_str),
        Some("step 3 failed")
    );
    assert_eq!(*log.borrow(), ["do 1", "do 2", "undo 2", "undo 1"]);
}

#[test]
fn a_successful_setup_rolls_back_nothing() {
    let log = Log::default();
    let teardown = set_up(&log, None).unwrap();
    assert_eq!(*log.borrow(), ["do 1", "do 2", "do 3"]);
    drop(teardown);
    assert_eq!(*log.borrow(), ["do 1", "do 2", "do 3", "teardown"]);
}

#[test]
fn the_failing_iteration_of_a_loop_runs_its_error_cleanups() {
    let log = RefCell::new(Vec::new());
    let result = try_for_each_scoped(0..5, |s, i| {
        let log = &log;
        s.defer_on_error(move || log.borrow_mut().push(format!("undo {i}")));
        s.defer_on_success(move || log.borrow_mut().push(format!("commit {i}")));
        if i == 2 { Err(i) } else { Ok(()) }
    });
    assert_eq!(result.unwrap_err().body_error(), Some(&2));
    assert_eq!(*log.borrow(), ["commit 0", "commit 1", "undo 2"]);
}

#[test]
fn dismissed_outcome_cleanups_run_in_no_case() {
    let log = Log::default();
    let result = try_scope(|s| {
        register(s, &log);
        s.dismiss();
        Err::<(), _>(())
    });
    assert!(result.is_err());
    assert!(log.borrow().is_empty());
}
