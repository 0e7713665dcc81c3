//! In Go, a defer-in-a-loop leak is found with pprof and `runtime.MemStats`: memory that grows
//! with the input. Here the same bug is found through a scope's stats (the pending
//! closures' high-water mark grows with the input) and then stopped by a limit.
//!
//! Usage: `cargo run --example leak_check`. Exits non-zero if the leak is not found or stopped.

use std::process::ExitCode;

use scoped_defer::{Scope, for_each_scoped_in};

/// A "request handler" with the bug: it registers a cleanup per item on the scope of the
/// whole request, so cleanups pile up until the request ends.
fn handle_leaky(items: usize, request: &mut Scope<'_>) {
    for item in 0..items {
        let buffer = vec![0u8; 64]; // stands for a file, a lock, a connection
        request.defer(move || drop((item, buffer)));
    }
}

/// The fix: each item gets its own scope.
fn handle_fixed(items: usize, request: &mut Scope<'_>) {
    for_each_scoped_in(request, 0..items, |s, item| {
        let buffer = vec![0u8; 64];
        s.defer(move || drop((item, buffer)));
    });
}

fn high_water(handler: fn(usize, &mut Scope<'_>), items: usize) -> usize {
    let mut request = Scope::with_stats();
    handler(items, &mut request);
    request.run_now();
    request.stats().expect("tracking").high_water
}

fn main() -> ExitCode {
    println!(
        "{:>8} {:>22} {:>22}",
        "items", "leaky high-water", "fixed high-water"
    );
    let sizes = [10, 100, 1_000, 10_000];
    let mut leaky = Vec::new();
    let mut fixed = Vec::new();
    for items in sizes {
        leaky.push(high_water(handle_leaky, items));
        fixed.push(high_water(handle_fixed, items));
        println!(
            "{items:>8} {:>22} {:>22}",
            leaky.last().unwrap(),
            fixed.last().unwrap()
        );
    }
    let found = leaky.windows(2).all(|w| w[1] > w[0]);
    let flat = fixed.iter().all(|&h| h == fixed[0]);
    println!(
        "\nleaky: pending cleanups grow with the input ({}); fixed: constant ({})",
        if found { "a pile-up" } else { "?" },
        if flat { "no pile-up" } else { "?" },
    );

    // A limit turns the pile-up into an error at the first cleanup too many; stats show where
    // it stopped.
    let mut request = Scope::with_stats();
    request.set_limit(100);
    std::panic::set_hook(Box::new(|_| {})); // the panic is expected; it is printed below
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle_leaky(10_000, &mut request);
    }));
    let message = stopped
        .as_ref()
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned());
    println!(
        "with_limit(100): {}",
        message.as_deref().unwrap_or("no panic")
    );
    let stats = request.stats().expect("tracking");
    println!(
        "  pending when stopped: {}, high-water: {}",
        stats.pending, stats.high_water
    );

    if found && flat && stopped.is_err() && stats.high_water == 100 {
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: the leak was not found or not stopped");
        ExitCode::FAILURE
    }
}
