//! Go's `mu.Lock(); defer mu.Unlock()`, in Rust. Four threads increment a
//! counter under a lock, three ways: the idiomatic `MutexGuard` (RAII is a block-scoped
//! defer), `defer!` around a lock with explicit `unlock`, and a `Scope` that owns the guard.
//! One increment in each run panics mid-section: the lock must still be released.
//!
//! Usage: `cargo run --release --example mutex_unlock`. Exits non-zero if a count is wrong or
//! a lock stays held.

use std::hint::spin_loop;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use scoped_defer::{Scope, defer};

const THREADS: u64 = 4;
const PER_THREAD: u64 = 100_000;

/// A lock with separate `lock` and `unlock`, like Go's `sync.Mutex`.
#[derive(Default)]
struct GoStyleMutex(AtomicBool);

impl GoStyleMutex {
    fn lock(&self) {
        while self.0.swap(true, Ordering::Acquire) {
            spin_loop();
        }
    }
    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
    fn is_locked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Runs `increment` from every thread; the very first call panics inside the critical
/// section, after the lock is taken. Returns the elapsed milliseconds.
fn hammer(increment: &(dyn Fn(bool) + Sync)) -> f64 {
    let start = Instant::now();
    std::thread::scope(|threads| {
        for t in 0..THREADS {
            threads.spawn(move || {
                for i in 0..PER_THREAD {
                    let panics = t == 0 && i == 0;
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| increment(panics)));
                }
            });
        }
    });
    start.elapsed().as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    panic::set_hook(Box::new(|_| {})); // the one panic per run is on purpose
    let expected = THREADS * PER_THREAD - 1;
    let mut ok = true;

    // 1. Idiomatic Rust: the guard unlocks at the end of the block, on every exit.
    let counter = Mutex::new(0u64);
    let ms = hammer(&|panics| {
        let mut count = counter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(!panics, "fails mid-section");
        *count += 1;
    });
    let count = *counter.lock().unwrap_or_else(|p| p.into_inner());
    println!("MutexGuard (RAII):         count {count:>7}  {ms:>7.1} ms");
    ok &= count == expected;

    // 2. Go's shape: lock, then `defer!` the unlock.
    let lock = GoStyleMutex::default();
    let count = AtomicU64::new(0);
    let ms = hammer(&|panics| {
        lock.lock();
        defer! { lock.unlock(); }
        assert!(!panics, "fails mid-section");
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    let count = count.into_inner();
    println!(
        "lock + defer! unlock:      count {count:>7}  {ms:>7.1} ms  held after: {}",
        lock.is_locked()
    );
    ok &= count == expected && !lock.is_locked();

    // 3. A scope that owns the guard: for code that decides at run time what to release.
    let counter = Mutex::new(0u64);
    let ms = hammer(&|panics| {
        let scope = Scope::new();
        let mut guard = counter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(!panics, "fails mid-section");
        *guard += 1;
        scope.defer(move || drop(guard));
    });
    let count = *counter.lock().unwrap_or_else(|p| p.into_inner());
    println!("Scope owning the guard:    count {count:>7}  {ms:>7.1} ms");
    ok &= count == expected;

    if ok {
        println!(
            "\nEvery lock was released, the panicking section included; no increment was lost."
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("UNEXPECTED: a count is wrong or a lock is still held");
        ExitCode::FAILURE
    }
}
