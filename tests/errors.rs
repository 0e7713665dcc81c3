//! Fallible cleanups: every error is returned, handed to the handler, or raised; none is lost.
mod common;

use std::cell::RefCell;
use std::error::Error;
use std::fmt;

use common::{Events, panic_message, quiet_panics};
use scoped_defer::{BoxError, Scope, ScopeError, try_for_each_scoped, try_scope};

#[derive(Debug, PartialEq)]
struct CloseError(u32);

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closing {} failed", self.0)
    }
}

impl std::error::Error for CloseError {}

/// Registers a fallible cleanup that records its run and fails if `fails`.
fn defer_close(scope: &mut Scope<'_>, events: &Events, id: u32, fails: bool) {
    let token = events.token(id);
    scope.defer_fallible(move || {
        token.ran();
        if fails {
            Err(CloseError(token.id))
        } else {
            Ok(())
        }
    });
}

fn ids(errors: impl IntoIterator<Item = BoxError>) -> Vec<u32> {
    errors
        .into_iter()
        .map(|e| e.downcast::<CloseError>().expect("a CloseError").0)
        .collect()
}

#[test]
fn finish_returns_every_error_in_the_order_they_happened() {
    let events = Events::new();
    let mut scope: Scope<'_> = Scope::new();
    for id in 0..5 {
        defer_close(&mut scope, &events, id, id % 2 == 0);
    }
    scope.defer(|| ());
    let errors = scope.finish().unwrap_err();
    assert_eq!(events.ran(), [4, 3, 2, 1, 0], "every cleanup ran");
    events.assert_each_dropped_once(0..5);
    assert_eq!(errors.len(), 3);
    assert_eq!(errors.first().to_string(), "closing 4 failed");
    assert_eq!(
        errors.to_string(),
        "3 cleanups failed: closing 4 failed; closing 2 failed; closing 0 failed"
    );
    assert!(
        errors.source().is_none(),
        "the message already shows every error"
    );
    assert_eq!(errors.iter().count(), 3);
    let by_ref: Vec<String> = (&errors).into_iter().map(|e| e.to_string()).collect();
    assert_eq!(
        by_ref,
        ["closing 4 failed", "closing 2 failed", "closing 0 failed"]
    );
    assert_eq!(ids(errors), [4, 2, 0]);
}

#[test]
fn finish_is_ok_when_nothing_fails() {
    let events = Events::new();
    let mut scope: Scope<'_> = Scope::new();
    defer_close(&mut scope, &events, 0, false);
    assert!(scope.finish().is_ok());
    assert_eq!(events.ran(), [0]);
}

#[test]
fn a_dropped_scope_hands_errors_to_its_handler() {
    let events = Events::new();
    let handled = RefCell::new(Vec::new());
    {
        let mut scope: Scope<'_> = Scope::new();
        scope.set_error_handler(|e| handled.borrow_mut().push(e.to_string()));
        for id in 0..3 {
            defer_close(&mut scope, &events, id, id != 1);
        }
    }
    assert_eq!(*handled.borrow(), ["closing 2 failed", "closing 0 failed"]);
    assert_eq!(events.ran(), [2, 1, 0]);
}

#[test]
fn a_dropped_scope_without_handler_panics_after_running_everything() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        let mut scope: Scope<'_> = Scope::new();
        defer_close(&mut scope, &events, 0, true);
        defer_close(&mut scope, &events, 1, false);
    })
    .expect("the lost error must not be silent");
    assert!(
        message.starts_with("cleanup failed: closing 0 failed"),
        "{message}"
    );
    assert!(
        message.contains("set_error_handler"),
        "the message says how to handle it: {message}"
    );
    assert!(
        message.contains(&format!("registered at {}:25:", file!())),
        "the message points at the failed cleanup's registration: {message}"
    );
    assert_eq!(events.ran(), [1, 0]);
    events.assert_each_dropped_once(0..2);
}

#[cfg(feature = "std")] // without `std` an error raised during an unwind aborts
#[test]
fn errors_of_a_scope_dropped_during_a_panic_neither_abort_nor_replace_it() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        let mut scope: Scope<'_> = Scope::new();
        defer_close(&mut scope, &events, 0, true);
        panic!("body");
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert_eq!(events.ran(), [0]);
}

#[test]
fn run_now_delivers_errors_and_try_run_now_returns_them() {
    let events = Events::new();
    let handled = RefCell::new(0);
    let mut scope: Scope<'_> = Scope::new();
    scope.set_error_handler(|_| *handled.borrow_mut() += 1);
    defer_close(&mut scope, &events, 0, true);
    scope.run_now();
    assert_eq!(*handled.borrow(), 1);
    defer_close(&mut scope, &events, 1, true);
    assert_eq!(ids(scope.try_run_now().unwrap_err()), [1]);
    assert_eq!(
        *handled.borrow(),
        1,
        "returned errors do not reach the handler"
    );
}

#[cfg(feature = "std")] // without `std` the panic propagates before errors are delivered
#[test]
fn panics_and_errors_together_lose_neither() {
    quiet_panics();
    let events = Events::new();
    let handled = RefCell::new(Vec::new());
    let mut scope: Scope<'_> = Scope::new();
    scope.set_error_handler(|e| handled.borrow_mut().push(e.to_string()));
    defer_close(&mut scope, &events, 0, true);
    let token = events.token(1);
    scope.defer(move || {
        token.ran();
        panic!("cleanup 1");
    });
    defer_close(&mut scope, &events, 2, true);
    let message = panic_message(move || drop(scope.finish()));
    assert_eq!(message.as_deref(), Some("cleanup 1"), "the panic surfaces");
    assert_eq!(
        *handled.borrow(),
        ["closing 2 failed", "closing 0 failed"],
        "errors reach the handler"
    );
    assert_eq!(events.ran(), [2, 1, 0]);
    events.assert_each_dropped_once(0..3);
}

#[test]
fn try_scope_keeps_the_body_error_primary_and_cleanup_errors_suppressed() {
    let events = Events::new();
    let result: Result<(), _> = try_scope(|s| {
        let token = events.token(0);
        s.defer_fallible(move || {
            token.ran();
            Err(CloseError(0))
        });
        Err(CloseError(99))
    });
    let error = result.unwrap_err();
    assert_eq!(error.body_error(), Some(&CloseError(99)));
    assert_eq!(
        error.to_string(),
        "closing 99 failed (and cleanup failed: closing 0 failed)"
    );
    let suppressed = error.cleanup_errors().unwrap();
    assert_eq!(suppressed.first().to_string(), "closing 0 failed");
    assert_eq!(error.into_body_error().unwrap(), CloseError(99));
}

#[test]
fn try_scope_reports_cleanup_errors_when_the_body_succeeds() {
    let result = try_scope(|s| {
        s.defer_fallible(|| Err::<(), _>(CloseError(1)));
        Ok::<_, CloseError>(5)
    });
    match result {
        Err(ScopeError::Cleanup(errors)) => assert_eq!(ids(errors), [1]),
        other => panic!("expected cleanup errors, got {other:?}"),
    }
    let fine = try_scope(|s| {
        s.defer_fallible(|| Ok::<(), CloseError>(()));
        Ok::<_, CloseError>(5)
    });
    assert_eq!(fine.unwrap(), 5);
}

#[test]
fn scope_error_converts_into_box_dyn_error() {
    fn run() -> Result<(), Box<dyn std::error::Error>> {
        try_scope(|s| {
            s.defer_fallible(|| Err::<(), _>(CloseError(3)));
            Ok::<_, CloseError>(())
        })?;
        Ok(())
    }
    assert_eq!(
        run().unwrap_err().to_string(),
        "cleanup failed: closing 3 failed"
    );
}

#[test]
fn try_for_each_scoped_stops_at_the_iteration_whose_cleanup_failed() {
    let events = Events::new();
    let result = try_for_each_scoped(0..10u32, |s, i| {
        let token = events.token(i);
        s.defer_fallible(move || {
            token.ran();
            if token.id == 3 {
                Err(CloseError(3))
            } else {
                Ok(())
            }
        });
        Ok::<(), CloseError>(())
    });
    match result {
        Err(ScopeError::Cleanup(errors)) => assert_eq!(ids(errors), [3]),
        other => panic!("expected the cleanup error of item 3, got {other:?}"),
    }
    assert_eq!(events.ran(), [0, 1, 2, 3], "no item after the failed one");
}

#[test]
fn a_taken_scope_carries_its_fallible_closures() {
    let events = Events::new();
    let mut scope: Scope<'_> = Scope::new();
    defer_close(&mut scope, &events, 0, true);
    let taken = scope.take();
    assert!(scope.finish().is_ok(), "the errors went with the closures");
    assert_eq!(ids(taken.finish().unwrap_err()), [0]);
}

#[test]
fn cleanup_errors_convert_from_any_error_type() {
    let scope: Scope<'_> = Scope::new();
    scope.defer_fallible(|| Err::<(), _>(std::io::Error::other("io")));
    scope.defer_fallible(|| Err::<(), _>(String::from("string")));
    scope.defer_fallible(|| Err::<(), _>("str"));
    let errors = scope.finish().unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages, ["str", "string", "io"]);
}

/// An error with a cause, to follow `source()` through.
#[derive(Debug)]
struct WithCause(CloseError);

impl std::fmt::Display for WithCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("write failed")
    }
}

impl Error for WithCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

/// `ScopeError<E>` is an `Error` for any `E: Debug + Display` (so that `?` reaches anyhow),
/// which costs `source()`: it is `None`, and the body error stays reachable through
/// `body_error`, cause included.
#[test]
fn scope_errors_have_no_source_and_keep_the_body_error_reachable() {
    let body_failed = try_scope(|s| {
        s.defer_fallible(|| Err("close failed"));
        Err::<(), _>(WithCause(CloseError(7)))
    })
    .unwrap_err();
    assert!(body_failed.source().is_none());
    let cause = body_failed.body_error().unwrap().source().unwrap();
    assert_eq!(cause.to_string(), CloseError(7).to_string());
    assert_eq!(
        body_failed.to_string(),
        "write failed (and cleanup failed: close failed)"
    );

    let cleanup_failed = try_scope(|s| {
        s.defer_fallible(|| Err("close failed"));
        Ok::<(), WithCause>(())
    })
    .unwrap_err();
    assert!(
        cleanup_failed.source().is_none(),
        "the message lists the cleanup errors"
    );
}

#[test]
fn debug_output_shows_what_matters() {
    let scope = Scope::new();
    scope.defer_fallible(|| Err("flush failed"));
    let errors = scope.finish().unwrap_err();
    assert_eq!(format!("{errors:?}"), r#"["flush failed"]"#);

    let limited = Scope::with_limit(0);
    let refused = limited.try_defer(|| ()).unwrap_err();
    assert_eq!(format!("{refused:?}"), "LimitExceeded { limit: 0, .. }");

    let scope: Scope<'_, 2> = Scope::default();
    for _ in 0..3 {
        scope.defer(|| ());
    }
    assert_eq!(
        format!("{scope:?}"),
        "Scope { pending: 3, capacity: 6, spilled: true, limit: None, .. }"
    );
    let send = scoped_defer::SendScope::with_limit(5);
    assert_eq!(
        format!("{send:?}"),
        "SendScope(Scope { pending: 0, capacity: 8, spilled: false, limit: Some(5), .. })"
    );
}
