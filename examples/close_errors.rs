//! Go's `defer f.Close()` drops the error that `Close` returns, so a write that fails only when
//! it is flushed looks like a success. This program writes through a writer that fails on
//! flush, first the naive way (the error is lost), then with `hold_fallible`, which keeps the
//! writer usable and returns the error of its final flush.
//!
//! Usage: `cargo run --example close_errors`. Exits non-zero if the crate loses the error.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use scoped_defer::{Scope, ScopeError, try_scope};

/// A sink that accepts writes but fails every flush, like a full disk or a closed socket.
struct FailsOnFlush;

impl Write for FailsOnFlush {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::other("no space left on device (on flush)"))
    }
}

/// The Go shape: the cleanup flushes, but its error has nowhere to go.
fn naive_save(data: &[u8]) -> io::Result<()> {
    let mut out = BufWriter::new(FailsOnFlush);
    out.write_all(data)?;
    // `BufWriter` flushes when dropped and ignores the error: `defer f.Close()`.
    Ok(())
}

/// The same with the flush as a fallible cleanup, registered where the writer is made, as in
/// Go: its error becomes the result.
fn save(data: &[u8]) -> Result<(), ScopeError<io::Error>> {
    try_scope(|s| {
        let out = s.hold_fallible(BufWriter::new(FailsOnFlush), |mut out| out.flush());
        out.write_all(data)
    })
}

fn main() -> ExitCode {
    let data = b"important records\n";
    let naive = naive_save(data);
    println!("naive save (error dropped by the cleanup): {naive:?}");

    let checked = save(data);
    match &checked {
        Ok(()) => println!("save with hold_fallible: Ok"),
        Err(error) => println!("save with hold_fallible: Err({error})"),
    }

    // A scope dropped without `finish` still never loses the error: it goes to a handler.
    let mut reported = Vec::new();
    {
        let mut scope = Scope::new();
        scope.set_error_handler(|e| reported.push(e.to_string()));
        let out = scope.hold_fallible(BufWriter::new(FailsOnFlush), |mut out| out.flush());
        out.write_all(data).expect("buffered");
    }
    println!("dropped scope, error handler received: {reported:?}");

    let lost_by_naive = naive.is_ok();
    let kept = matches!(&checked, Err(ScopeError::Cleanup(errors)) if errors.len() == 1)
        && reported.len() == 1;
    if lost_by_naive && kept {
        println!("\nThe naive version reported success; the crate returned the flush error.");
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: naive lost it: {lost_by_naive}, crate kept it: {kept}");
        ExitCode::FAILURE
    }
}
