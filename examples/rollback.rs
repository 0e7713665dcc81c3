//! A setup of several steps that must be all-or-nothing: each finished step registers its
//! cleanup; if a later step fails, the scope ends and undoes only the steps already done, in
//! reverse. On success the cleanups are handed to the caller with `take` (Python's
//! `ExitStack.pop_all()`), to run when the caller is done. A step may also register an action
//! for failure only (`defer_on_error`), like Zig's `errdefer`.
//!
//! Usage: `cargo run --example rollback`. Exits non-zero if a rollback or hand-over is wrong.

use std::cell::RefCell;
use std::process::ExitCode;

use scoped_defer::{Scope, ScopeError, try_scope};

type Log = RefCell<Vec<String>>;

/// Creates a directory, a database and a listener; step `fail_at` fails. On success returns the
/// scope that tears the three down.
fn set_up<'a>(log: &'a Log, fail_at: Option<usize>) -> Result<Scope<'a>, ScopeError<String>> {
    const STEPS: [&str; 3] = ["directory", "database", "listener"];
    try_scope(|s| {
        for (i, step) in STEPS.into_iter().enumerate() {
            if fail_at == Some(i) {
                return Err(format!("creating the {step} failed"));
            }
            log.borrow_mut().push(format!("create {step}"));
            // Close the resource when the setup fails, or when the caller is done with it.
            s.defer(move || log.borrow_mut().push(format!("close {step}")));
            // Report the failure, once, only if a later step fails.
            s.defer_on_error(move || log.borrow_mut().push(format!("log: rolled back at {step}")));
        }
        // The whole setup worked: hand the cleanups to the caller instead of running them.
        Ok(s.take())
    })
}

fn main() -> ExitCode {
    let mut ok = true;
    for fail_at in [Some(0), Some(1), Some(2), None] {
        let log = Log::default();
        let result = set_up(&log, fail_at);
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let during = log.borrow().clone();
        drop(result);
        let after = log.borrow()[during.len()..].to_vec();
        println!(
            "fail at {fail_at:?}: {outcome}\n  during setup: {during:?}\n  when the caller is done: {after:?}"
        );

        let done = fail_at.unwrap_or(3);
        let names = ["directory", "database", "listener"];
        let mut expected: Vec<String> = names[..done]
            .iter()
            .map(|n| format!("create {n}"))
            .collect();
        let closes = names[..done]
            .iter()
            .rev()
            .flat_map(|n| [format!("log: rolled back at {n}"), format!("close {n}")]);
        let expected_after: Vec<String> = if fail_at.is_some() {
            expected.extend(closes);
            Vec::new()
        } else {
            names.iter().rev().map(|n| format!("close {n}")).collect()
        };
        ok &= during == expected && after == expected_after;
    }
    if ok {
        println!(
            "\nEvery failure undid exactly the steps already done; success handed the cleanups over."
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: a rollback or the hand-over went wrong");
        ExitCode::FAILURE
    }
}
