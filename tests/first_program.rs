//! A newcomer's first program, written from the docs in the plain form (no annotations beyond
//! what rustc's help suggests), and one case for each paper cut it used to hit.

#![cfg(feature = "std")] // `?` into `io::Error` and the outcome guards need `std`

mod common;

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use common::{catch_expected, last_panic_location, panic_message, quiet_panics};
use scoped_defer::{
    CleanupErrors, LimitExceeded, Scope, ScopeError, SendScope, defer, defer_on_success,
    for_each_scoped, for_each_scoped_in, scope, try_for_each_scoped, try_for_each_scoped_in,
    try_scope,
};

// ---------------------------------------------------------------------------------------------
// The program: copy files, roll back a setup that fails half-way, report a failed flush.

/// Copies every pair; any error, of a copy or of a `sync_all`, reaches the caller as an
/// `io::Error`.
fn copy_all(pairs: &[(PathBuf, PathBuf)]) -> io::Result<u64> {
    let mut total = 0;
    try_for_each_scoped(pairs, |s, (from, to)| {
        let src = s.hold(File::open(from)?, drop);
        let dst = s.hold_fallible(File::create(to)?, |f| f.sync_all());
        total += io::copy(src, dst)?;
        Ok::<_, io::Error>(())
    })?;
    Ok(total)
}

/// Creates `a/` and `b/` under `root`, then writes `b/config`, which fails if `fail` is set:
/// then the directories made so far are removed again.
fn set_up(root: &Path, fail: bool) -> io::Result<()> {
    try_scope(|s| {
        let a = root.join("a");
        fs::create_dir(&a)?;
        s.defer_on_error(move || fs::remove_dir(&a).unwrap());
        let b = root.join("b");
        fs::create_dir(&b)?;
        s.defer_on_error(move || fs::remove_dir(&b).unwrap());
        let config = if fail {
            root.join("missing/config")
        } else {
            root.join("b/config")
        };
        fs::write(config, "ok")?;
        Ok::<_, io::Error>(())
    })?;
    Ok(())
}

/// A writer whose flush fails: a full disk, as far as the caller can tell.
struct FullDisk(Vec<u8>);

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "flush: disk full",
        ))
    }
}

fn write_report() -> io::Result<usize> {
    let written = try_scope(|s| {
        let out = s.hold_fallible(FullDisk(Vec::new()), |mut out| out.flush());
        out.write_all(b"report")?;
        Ok::<_, io::Error>(out.0.len())
    })?;
    Ok(written)
}

#[test]
#[cfg_attr(miri, ignore)] // Miri runs without a file system
fn the_newcomers_program_compiles_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<_> = (0..2_000)
        .map(|i| {
            let from = dir.path().join(format!("in{i}"));
            fs::write(&from, "abcd").unwrap();
            (from, dir.path().join(format!("out{i}")))
        })
        .collect();
    assert_eq!(copy_all(&pairs).unwrap(), 8_000);
    assert_eq!(fs::read(&pairs[1_999].1).unwrap(), b"abcd");

    let missing = [(dir.path().join("nope"), dir.path().join("x"))];
    assert_eq!(
        copy_all(&missing).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );

    let root = tempfile::tempdir().unwrap();
    assert!(set_up(root.path(), true).is_err());
    assert!(!root.path().join("a").exists(), "rolled back");
    assert!(!root.path().join("b").exists(), "rolled back");
    set_up(root.path(), false).unwrap();
    assert!(root.path().join("b/config").exists());

    let error = write_report().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    assert!(error.to_string().contains("flush: disk full"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// 1. Constructors infer the default `N`.

#[test]
fn constructors_need_no_annotations() {
    let log = RefCell::new(Vec::new());
    {
        let s = Scope::new();
        s.defer(|| log.borrow_mut().push("new"));
        let limited = Scope::with_limit(1);
        limited.defer(|| log.borrow_mut().push("with_limit"));
        let mut tracked = Scope::with_stats();
        tracked.defer(|| log.borrow_mut().push("with_stats"));
        tracked.run_now();
        assert_eq!(tracked.stats().unwrap().ran, 1);
    }
    assert_eq!(*log.borrow(), ["with_stats", "with_limit", "new"]);

    let sent = SendScope::new();
    sent.defer(|| ());
    assert_eq!(SendScope::with_limit(2).limit(), Some(2));
    assert!(SendScope::with_stats().stats().is_some());

    // Another inline capacity: name the type, as for any generic collection.
    let small: Scope<'_, 2> = Scope::default();
    assert_eq!(small.capacity(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. `?` into `io::Error`, suppressed errors included.

fn failing_write_and_close() -> io::Result<()> {
    try_scope(|s| {
        s.defer_fallible(|| Err(io::Error::other("close failed")));
        Err(io::Error::new(io::ErrorKind::WriteZero, "write failed"))
    })?;
    Ok(())
}

fn only_close_fails() -> io::Result<()> {
    try_for_each_scoped(0..3, |s, i| {
        s.defer_fallible(move || {
            if i == 1 {
                Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "close 1 failed",
                ))
            } else {
                Ok(())
            }
        });
        Ok::<_, io::Error>(())
    })?;
    Ok(())
}

#[test]
fn question_mark_reaches_io_result_and_keeps_suppressed_errors() {
    let error = failing_write_and_close().unwrap_err();
    assert_eq!(
        error.kind(),
        io::ErrorKind::WriteZero,
        "the body's error is primary"
    );
    let message = error.to_string();
    assert!(
        message.contains("write failed") && message.contains("close failed"),
        "{message}"
    );
    let inner = error.get_ref().unwrap();
    let scope_error = inner.downcast_ref::<ScopeError<io::Error>>().unwrap();
    assert_eq!(
        scope_error.cleanup_errors().unwrap().first().to_string(),
        "close failed"
    );

    let error = only_close_fails().unwrap_err();
    assert_eq!(
        error.kind(),
        io::ErrorKind::PermissionDenied,
        "the cleanup error's kind"
    );
    let errors = error
        .get_ref()
        .unwrap()
        .downcast_ref::<CleanupErrors>()
        .unwrap();
    assert_eq!(errors.first().to_string(), "close 1 failed");

    // Nothing suppressed: the body's own error comes back untouched.
    let plain: io::Result<()> = (|| {
        try_scope(|_| Err(io::Error::from_raw_os_error(2)))?;
        Ok(())
    })();
    assert_eq!(plain.unwrap_err().raw_os_error(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// 3. `defer!` with a field, a deref, an index or a parenthesized scope.

struct Connection<'a> {
    cleanups: Scope<'a>,
}

impl<'a> Connection<'a> {
    fn open(&self, log: &'a RefCell<Vec<&'static str>>) {
        defer!(self.cleanups => log.borrow_mut().push("self.cleanups"));
    }
}

#[test]
fn defer_macro_takes_place_expressions() {
    let log = RefCell::new(Vec::new());
    {
        let connection = Connection {
            cleanups: Scope::new(),
        };
        connection.open(&log);
        let log = &log; // the scope form moves its captures, as `defer!` docs say
        let c = &connection;
        defer!(c.cleanups => log.borrow_mut().push("c.cleanups"));
        let boxed = Box::new(Scope::new());
        defer!(*boxed => log.borrow_mut().push("*boxed"));
        let scopes = [Scope::new(), Scope::new()];
        defer!(scopes[1] => log.borrow_mut().push("scopes[1]"));
        defer!((scopes[0]) => log.borrow_mut().push("(scopes[0])"));
        drop(scopes);
        drop(boxed);
    }
    assert_eq!(
        *log.borrow(),
        [
            "(scopes[0])",
            "scopes[1]",
            "*boxed",
            "c.cleanups",
            "self.cleanups"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Error chains print every message once.

/// The chain as `anyhow` prints it with `{:#}`: each error's message, then its source's.
fn chain(error: &dyn Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut next = error.source();
    while let Some(source) = next {
        parts.push(source.to_string());
        next = source.source();
    }
    parts.join(": ")
}

#[test]
fn error_chains_print_each_message_once() {
    let s = Scope::new();
    s.defer_fallible(|| Err("flush failed"));
    let one = s.finish().unwrap_err();
    assert_eq!(chain(&one), "cleanup failed: flush failed");

    let s = Scope::new();
    s.defer_fallible(|| Err("flush failed"));
    s.defer_fallible(|| Err("unlock failed"));
    let two = s.finish().unwrap_err();
    assert_eq!(
        chain(&two),
        "2 cleanups failed: unlock failed; flush failed"
    );

    let body_failed = try_scope(|s| {
        s.defer_fallible(|| Err("close failed"));
        Err::<(), _>(io::Error::other("write failed"))
    })
    .unwrap_err();
    let printed = chain(&body_failed);
    assert_eq!(printed.matches("write failed").count(), 1, "{printed}");
    assert_eq!(printed.matches("close failed").count(), 1, "{printed}");

    let converted = io::Error::from(body_failed);
    let printed = chain(&converted);
    assert_eq!(printed.matches("write failed").count(), 1, "{printed}");
    assert_eq!(printed.matches("close failed").count(), 1, "{printed}");
}

// ---------------------------------------------------------------------------------------------
// 5. Small API points.

/// The line of `register_all`'s `try_defer`.
const REGISTER_LINE: u32 = line!() + 4;

fn register_all(s: &Scope<'_>) -> Result<(), Box<dyn Error + Send + Sync>> {
    for _ in 0..3 {
        s.try_defer(|| ()).map_err(LimitExceeded::drop_closure)?;
    }
    Ok(())
}

#[test]
fn errors_iterate_by_reference_and_limits_convert_to_boxed_errors() {
    let s = Scope::new();
    s.defer_fallible(|| Err("b"));
    s.defer_fallible(|| Err("a"));
    let errors = s.finish().unwrap_err();
    let mut seen = Vec::new();
    for error in &errors {
        seen.push(error.to_string());
    }
    assert_eq!(seen, ["a", "b"]);

    let limited = Scope::with_limit(2);
    let refused = register_all(&limited).unwrap_err();
    let site = format!("tests/first_program.rs:{REGISTER_LINE}:11");
    assert_eq!(
        refused.to_string(),
        format!(
            "the scope already holds its limit of 2 pending closures, 2 of them registered at \
             {site}: a defer inside a loop? Give each iteration its own scope with \
             for_each_scoped or try_for_each_scoped (refused: the closure registered at {site})"
        )
    );
    assert_eq!(limited.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 6. An error nobody can return points at the user's code.

/// The message of the panic `f` raises, and where it was raised (`file:line`).
fn panic_and_location(f: impl FnOnce()) -> (String, String) {
    quiet_panics();
    let message = panic_message(f).expect("a panic");
    (message, last_panic_location().unwrap())
}

#[test]
fn unreported_errors_point_at_user_code() {
    let here = |line: u32| format!("{}:{line}", file!());
    let (registered, ended) = (line!() + 3, line!() + 4);
    let (message, raised_at) = panic_and_location(|| {
        let mut s = Scope::new();
        s.defer_fallible(|| Err("disk full"));
        s.run_now();
    });
    assert!(message.contains(&here(registered)), "{message}");
    assert_eq!(raised_at, here(ended), "run_now's caller");

    let line = line!() + 2;
    let (message, raised_at) = panic_and_location(|| {
        for_each_scoped(0..1, |s, _| s.defer_fallible(|| Err("disk full")));
    });
    assert!(message.contains(&here(line)), "{message}");
    assert_eq!(raised_at, here(line), "the loop's caller");

    // A dropped scope panics in its destructor, but the message names the cleanup's line.
    let line = line!() + 3;
    let (message, _) = panic_and_location(|| {
        let s = Scope::new();
        s.defer_fallible(|| Err("disk full"));
    });
    assert!(message.contains(&here(line)), "{message}");
}

// ---------------------------------------------------------------------------------------------
// 7. One outcome rule: an outcome-aware cleanup sees the outcome as it stands when it runs.

#[test]
fn guards_and_scopes_follow_one_outcome_rule() {
    quiet_panics();
    let guard_committed = Cell::new(false);
    let result = catch_expected(|| {
        defer_on_success! { guard_committed.set(true); }
        defer! { panic!("a cleanup panics"); }
    });
    assert!(result.is_err());

    let scope_committed = Cell::new(false);
    let result = catch_expected(|| {
        let s = Scope::new();
        s.defer_on_success(|| scope_committed.set(true));
        s.defer(|| panic!("a cleanup panics"));
    });
    assert!(result.is_err());
    assert_eq!(
        (guard_committed.get(), scope_committed.get()),
        (false, false),
        "neither commits after a panic"
    );

    // The same in try_scope and the loops, and for a cleanup that fails.
    let rolled_back = Cell::new(0);
    let result = try_scope(|s| {
        s.defer_on_error(|| rolled_back.set(rolled_back.get() + 1));
        s.defer_fallible(|| Err("flush failed"));
        Ok::<_, io::Error>(())
    });
    assert!(matches!(result, Err(ScopeError::Cleanup(_))));
    let result = try_for_each_scoped(0..2, |s, _| {
        s.defer_on_error(|| rolled_back.set(rolled_back.get() + 1));
        s.defer_fallible(|| Err("flush failed"));
        Ok::<_, io::Error>(())
    });
    assert!(result.is_err());
    assert_eq!(
        rolled_back.get(),
        2,
        "rolled back once in try_scope, once in the loop"
    );

    // Before the failure, the outcome still stands as success.
    let committed = Cell::new(false);
    let result = try_scope(|s| {
        s.defer_fallible(|| Err("flush failed"));
        s.defer_on_success(|| committed.set(true));
        Ok::<_, io::Error>(())
    });
    assert!(result.is_err());
    assert!(committed.get(), "ran before the failing cleanup");
}

// ---------------------------------------------------------------------------------------------
// 8. `dismiss` and `take` forget the panic state of what they removed.

/// Registers a rollback on a scope inside a destructor, and leaves that scope normally.
struct RollbackInDestructor<'a> {
    scope: Option<Scope<'a>>,
    rolled_back: &'a Cell<bool>,
}

impl Drop for RollbackInDestructor<'_> {
    fn drop(&mut self) {
        let scope = self.scope.take().unwrap();
        let rolled_back = self.rolled_back;
        scope.defer_on_error(move || rolled_back.set(true));
        drop(scope); // a normal exit from this destructor: no rollback
    }
}

fn rolled_back_during_unwind(prepare: impl FnOnce(&mut Scope<'_>)) -> bool {
    quiet_panics();
    let rolled_back = Cell::new(false);
    let mut scope = Scope::new();
    prepare(&mut scope);
    let result = catch_expected(|| {
        let _guard = RollbackInDestructor {
            scope: Some(scope),
            rolled_back: &rolled_back,
        };
        panic!("an unrelated panic");
    });
    assert!(result.is_err());
    rolled_back.get()
}

#[test]
fn dismiss_and_take_forget_the_panic_state() {
    assert!(!rolled_back_during_unwind(|_| ()), "a fresh scope");
    assert!(
        !rolled_back_during_unwind(|s| {
            s.defer_on_success(|| ());
            s.dismiss();
        }),
        "after dismiss"
    );
    assert!(
        !rolled_back_during_unwind(|s| {
            s.defer_on_success(|| ());
            s.take().dismiss();
        }),
        "after take"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. A panicking error handler never aborts.

/// Ends a scope whose handler panics on each of two errors, by unwinding from `body_panics`
/// or normally; returns the panic that escaped and how many errors were handed over.
fn with_panicking_handler(body_panics: bool) -> (Option<String>, u32) {
    quiet_panics();
    let handled = Cell::new(0);
    let message = panic_message(|| {
        let mut s = Scope::new();
        s.set_error_handler(|_| {
            handled.set(handled.get() + 1);
            panic!("the handler panics");
        });
        s.defer_fallible(|| Err("a"));
        s.defer_fallible(|| Err("b"));
        if body_panics {
            panic!("the body panics");
        }
    });
    (message, handled.get())
}

#[test]
fn a_panicking_handler_during_an_unwind_does_not_abort() {
    let (message, handled) = with_panicking_handler(true);
    assert_eq!(message.as_deref(), Some("the body panics"));
    assert_eq!(handled, 2, "every error was handed over");

    let message = panic_message(|| {
        let mut s = Scope::new();
        s.set_error_handler(|_| panic!("the handler panics"));
        for_each_scoped_in(&mut s, 0..3, |s, _| {
            s.defer_fallible(|| Err("close failed"));
            panic!("the body panics");
        });
    });
    assert_eq!(message.as_deref(), Some("the body panics"));

    // Outside an unwind, the handler's panic resumes once every error is handed over.
    let (message, handled) = with_panicking_handler(false);
    assert_eq!(message.as_deref(), Some("the handler panics"));
    assert_eq!(handled, 2);
}

// ---------------------------------------------------------------------------------------------
// 10. Function forms resume cleanup panics even inside a destructor during an unwind.

/// Runs `f` in a destructor while an unrelated panic unwinds, and returns what the
/// `catch_unwind` around `f` saw.
fn caught_in_destructor(f: fn()) -> Option<String> {
    struct InDestructor<'a>(fn(), &'a RefCell<Option<String>>);
    impl Drop for InDestructor<'_> {
        fn drop(&mut self) {
            *self.1.borrow_mut() = panic_message(self.0);
        }
    }
    quiet_panics();
    let seen = RefCell::new(None);
    let result = catch_expected(|| {
        let _guard = InDestructor(f, &seen);
        panic!("an unrelated panic");
    });
    assert!(result.is_err());
    seen.into_inner()
}

#[test]
fn function_forms_resume_cleanup_panics_inside_destructors() {
    let expected = Some("the cleanup panics".to_string());
    assert_eq!(
        caught_in_destructor(|| scope(|s| s.defer(|| panic!("the cleanup panics")))),
        expected
    );
    assert_eq!(
        caught_in_destructor(|| {
            let _ = try_scope(|s| {
                s.defer(|| panic!("the cleanup panics"));
                Ok::<_, io::Error>(())
            });
        }),
        expected
    );
    assert_eq!(
        caught_in_destructor(
            || for_each_scoped(0..2, |s, _| s.defer(|| panic!("the cleanup panics")))
        ),
        expected
    );
    assert_eq!(
        caught_in_destructor(|| {
            let _ = try_for_each_scoped(0..2, |s, _| {
                s.defer(|| panic!("the cleanup panics"));
                Ok::<_, io::Error>(())
            });
        }),
        expected
    );
    // A plain scope cannot tell this case from a nested unwind, and swallows the panic
    // (documented); run_now() is the way to see it.
    assert_eq!(
        caught_in_destructor(|| {
            let s = Scope::new();
            s.defer(|| panic!("the cleanup panics"));
        }),
        None
    );
    assert_eq!(
        caught_in_destructor(|| {
            let mut s = Scope::new();
            s.defer(|| panic!("the cleanup panics"));
            s.run_now();
        }),
        expected
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A loop over a scope of one's own leaves the caller's closures alone.

#[test]
fn loops_run_only_their_own_closures() {
    quiet_panics();
    let log = RefCell::new(Vec::new());
    let log = &log;
    let mut s = Scope::new();
    s.defer(|| log.borrow_mut().push("earlier".to_string()));
    s.set_limit(2);
    for_each_scoped_in(&mut s, 0..3, |s, i| {
        assert!(s.is_empty(), "each iteration sees only its own closures");
        s.defer(move || log.borrow_mut().push(format!("iteration {i}")));
        s.defer(|| ()); // the limit of 2 counts this iteration's closures only
    });
    assert_eq!(*log.borrow(), ["iteration 0", "iteration 1", "iteration 2"]);
    assert_eq!(s.len(), 1, "the earlier closure is still pending");

    // It survives a panicking iteration too, and keeps its place below later closures.
    let result = catch_expected(|| {
        for_each_scoped_in(&mut s, 0..3, |s, i| {
            s.defer(move || log.borrow_mut().push(format!("unwound {i}")));
            panic!("iteration {i} fails");
        })
    });
    assert!(result.is_err());
    s.defer(|| log.borrow_mut().push("later".to_string()));
    drop(s);
    assert_eq!(
        *log.borrow(),
        [
            "iteration 0",
            "iteration 1",
            "iteration 2",
            "unwound 0",
            "later",
            "earlier"
        ]
    );

    // Earlier closures that need the scope's outcome or report errors keep doing so.
    let rolled_back = Cell::new(false);
    let mut s = Scope::new();
    s.defer_on_error(|| rolled_back.set(true));
    s.defer_fallible(|| Err("earlier close failed"));
    let result = try_for_each_scoped_in(&mut s, 0..2, |s, _| {
        s.defer_fallible(|| Ok::<(), &str>(()));
        Ok::<_, io::Error>(())
    });
    assert!(result.is_ok());
    assert!(!rolled_back.get());
    assert_eq!(
        s.finish().unwrap_err().first().to_string(),
        "earlier close failed"
    );
    assert!(
        rolled_back.get(),
        "the failed cleanup before it fails the scope"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. Names and defaults that say what they do.

#[test]
fn limits_stats_and_handlers_are_independent() {
    let limited = Scope::with_limit(3);
    assert!(limited.stats().is_none(), "a limit does not turn stats on");
    assert_eq!(Scope::with_limit(usize::MAX).limit(), Some(usize::MAX));
    assert_eq!(Scope::new().limit(), None);

    // `take` leaves the handler with the scope that set it: the taken closures' errors are
    // the new owner's to collect.
    let handled = Cell::new(0);
    let mut s = Scope::new();
    s.set_error_handler(|_| handled.set(handled.get() + 1));
    s.defer_fallible(|| Err("close failed"));
    let taken = s.take();
    drop(s);
    assert_eq!(taken.finish().unwrap_err().len(), 1);
    assert_eq!(handled.get(), 0);
}
