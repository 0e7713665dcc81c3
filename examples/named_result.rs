//! Go's "a deferred function may change a named result":
//!
//! ```go
//! func save() (err error) {
//!     f, _ := os.Create(path)
//!     defer func() {
//!         if cerr := f.Close(); err == nil { err = cerr }
//!     }()
//!     ...
//! }
//! ```
//!
//! Rust has no named results; this program shows the two forms that do the same job: a guard
//! that owns `&mut` the result and edits it on the way out, and `try_scope`, where a cleanup's
//! error becomes the result unless the body already failed.
//!
//! Usage: `cargo run --example named_result`. Exits non-zero if a result is not as shown.

use std::process::ExitCode;

use scoped_defer::{ScopeError, try_scope};

/// Form 1: the cleanup edits the result through a guard over `&mut result`.
fn count_with_guard(close_fails: bool) -> Result<u32, String> {
    let mut result: Result<u32, String> = Ok(0);
    {
        // The guard owns the `&mut`; the body works through it, the cleanup runs at block end.
        let mut out = scopeguard::guard(&mut result, |result| {
            if close_fails && result.is_ok() {
                *result = Err("close failed".to_string());
            }
        });
        if let Ok(count) = &mut **out {
            *count += 3;
        }
    }
    result
}

/// Form 2: the cleanup's error becomes the result, unless the body failed first (then it is
/// kept as suppressed).
fn count_with_try_scope(body_fails: bool, close_fails: bool) -> Result<u32, ScopeError<String>> {
    try_scope(|s| {
        s.defer_fallible(move || {
            if close_fails {
                Err("close failed")
            } else {
                Ok(())
            }
        });
        if body_fails {
            Err("write failed".to_string())
        } else {
            Ok(3)
        }
    })
}

fn main() -> ExitCode {
    let mut ok = true;
    for close_fails in [false, true] {
        let result = count_with_guard(close_fails);
        println!("guard over &mut result, close fails: {close_fails:<5} -> {result:?}");
        ok &= result
            == if close_fails {
                Err("close failed".to_string())
            } else {
                Ok(3)
            };
    }
    for (body_fails, close_fails) in [(false, false), (false, true), (true, false), (true, true)] {
        let result = count_with_try_scope(body_fails, close_fails);
        let shown = match &result {
            Ok(v) => format!("Ok({v})"),
            Err(e) => format!("Err({e})"),
        };
        println!("try_scope, body fails: {body_fails:<5} close fails: {close_fails:<5} -> {shown}");
        ok &= match (&result, body_fails, close_fails) {
            (Ok(3), false, false) => true,
            (Err(ScopeError::Cleanup(e)), false, true) => e.first().to_string() == "close failed",
            (Err(ScopeError::Body { error, suppressed }), true, close) => {
                error == "write failed" && suppressed.is_some() == close
            }
            _ => false,
        };
    }
    if ok {
        println!("\nThe cleanup's error became the result exactly when the body had succeeded.");
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: a result differs from the one shown above");
        ExitCode::FAILURE
    }
}
