//! The deferred-closure mechanisms compared by the benchmarks, shared by the criterion suite
//! (`benches/defer.rs`) and the instruction counter (`benches/instructions.rs`).
//!
//! Every mechanism registers `n` closures that each capture 16 bytes (a reference and a
//! `u64`) and run them last-in, first-out at the end of the function, like Go's
//! `func f() { for ... { x := ...; defer func() { s.acc = s.acc*31 + x }() } }`.
#![allow(dead_code, unreachable_pub)]

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use scoped_defer::{Scope, defer, for_each_scoped};

/// Where the closures write: order-dependent work, so no two orders give the same result.
#[derive(Default)]
pub struct Sink {
    pub acc: Cell<u64>,
}

#[inline(always)]
fn work(sink: &Sink, x: u64) {
    sink.acc
        .set(sink.acc.get().wrapping_mul(31).wrapping_add(x));
}

/// `n` deferred closures by one mechanism; `n == 0` measures the empty scope.
pub type Mechanism = fn(&Sink, usize);

/// The mechanisms by name, in the order the reports list them.
pub const MECHANISMS: [(&str, Mechanism); 15] = [
    ("direct call", direct),
    ("scopeguard guard", scopeguard_guard),
    ("indirect call (floor)", indirect_call),
    ("Scope::defer", scope_defer),
    ("Scope::defer, limit", scope_defer_limit),
    ("Scope::defer, stats", scope_defer_stats),
    ("Scope::defer, profiled", scope_defer_profiled),
    ("Scope::defer, sampled", scope_defer_sampled),
    ("Scope::hold", scope_hold),
    ("Scope::defer_entry", scope_defer_entry),
    ("Scope::hold_entry", scope_hold_entry),
    ("Vec<Box<dyn FnOnce()>>", boxed_vec),
    ("async: .await by hand", awaited::by_hand),
    ("AsyncScope::defer_async", awaited::defer_async),
    ("AsyncScope::defer", awaited::defer_sync),
];

/// The closures called by hand, in reverse: the floor.
#[inline(never)]
pub fn direct(sink: &Sink, n: usize) {
    for i in (0..n).rev() {
        work(sink, i as u64);
    }
}

/// One `scopeguard` guard per iteration, dropped at the end of it.
#[inline(never)]
pub fn scopeguard_guard(sink: &Sink, n: usize) {
    for i in (0..n).rev() {
        let x = i as u64;
        let _guard = scopeguard::guard((), move |()| work(sink, x));
    }
}

/// One opaque call through a function pointer per closure, with no storage: the floor for
/// any type-erased stack.
#[inline(never)]
pub fn indirect_call(sink: &Sink, n: usize) {
    let call: fn(&Sink, u64) = black_box(work);
    for i in (0..n).rev() {
        call(sink, i as u64);
    }
}

/// This crate's `Scope` with its default 8 inline slots.
#[inline(never)]
pub fn scope_defer(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::new();
    for i in 0..n {
        let x = i as u64;
        scope.defer(move || work(sink, x));
    }
}

/// The same with a limit that is never reached, the guard against a pile-up.
#[inline(never)]
pub fn scope_defer_limit(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::with_limit(100_000);
    for i in 0..n {
        let x = i as u64;
        scope.defer(move || work(sink, x));
    }
}

/// The same with stats, which record every closure's registration site.
#[inline(never)]
pub fn scope_defer_stats(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::with_stats();
    for i in 0..n {
        let x = i as u64;
        scope.defer(move || work(sink, x));
    }
}

/// A plain scope while the process-wide profile counts every registration exactly. (Enabled
/// and disabled on every call, two stores that the empty scope's count subtracts.)
#[inline(never)]
pub fn scope_defer_profiled(sink: &Sink, n: usize) {
    scoped_defer::profile::enable();
    scope_defer(sink, n);
    scoped_defer::profile::disable();
}

/// A plain scope while the profile samples at its default period.
#[inline(never)]
pub fn scope_defer_sampled(sink: &Sink, n: usize) {
    scoped_defer::profile::enable_sampled(scoped_defer::profile::DEFAULT_SAMPLE_PERIOD);
    scope_defer(sink, n);
    scoped_defer::profile::disable();
}

/// A value held with its cleanup, lent back and used once.
#[inline(never)]
pub fn scope_hold(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::new();
    for i in 0..n {
        let x = scope.hold(i as u64, move |x| work(sink, x));
        *x += 1;
    }
}

/// `Scope::defer` through an entry handle that is dropped: the closure runs with the others.
#[inline(never)]
pub fn scope_defer_entry(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::new();
    for i in 0..n {
        let x = i as u64;
        black_box(scope.defer_entry(move || work(sink, x)));
    }
}

/// `Scope::hold` through an entry handle, used once and dropped.
#[inline(never)]
pub fn scope_hold_entry(sink: &Sink, n: usize) {
    let scope: Scope<'_> = Scope::new();
    for i in 0..n {
        let mut x = scope.hold_entry(i as u64, move |x| work(sink, x));
        *x += 1;
    }
}

/// The usual hand-rolled stack: a `Vec` of boxed closures, popped at the end.
#[inline(never)]
pub fn boxed_vec(sink: &Sink, n: usize) {
    let mut stack: Vec<Box<dyn FnOnce() + '_>> = Vec::new();
    for i in 0..n {
        let x = i as u64;
        stack.push(Box::new(move || work(sink, x)));
    }
    while let Some(f) = stack.pop() {
        f();
    }
}

/// `count` items, `per_item` deferred closures each, through `for_each_scoped`.
#[inline(never)]
pub fn loop_scoped(sink: &Sink, count: usize, per_item: usize) {
    for_each_scoped(0..count, |s, i| {
        for k in 0..per_item {
            let x = (i + k) as u64;
            s.defer(move || work(sink, x));
        }
    });
}

/// The same loop with hand-written block guards, one per deferred closure.
#[inline(never)]
pub fn loop_block_guards(sink: &Sink, count: usize, per_item: usize) {
    for i in 0..count {
        match per_item {
            1 => {
                let x = i as u64;
                defer! { work(sink, x); }
            }
            3 => {
                let (x, y, z) = (i as u64, i as u64 + 1, i as u64 + 2);
                defer! { work(sink, x); }
                defer! { work(sink, y); }
                defer! { work(sink, z); }
            }
            _ => unimplemented!("the benchmarks use 1 or 3 defers per item"),
        }
    }
}

/// Awaited cleanups: the same work in an async fn `close(x)`, awaited by hand at the end of
/// the function or registered on an `AsyncScope`. Every future is ready when first polled, so
/// the executor is a single poll and what is measured is boxing, storing and polling. The
/// cleanups of an `AsyncScope` are `Send + 'static`, so they write to a thread-local sink
/// (the same one in all three).
pub mod awaited {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use scoped_defer::AsyncScope;

    use super::*;

    thread_local! {
        static ACC: Cell<u64> = const { Cell::new(0) };
    }

    #[inline(always)]
    fn work(x: u64) {
        ACC.with(|acc| acc.set(acc.get().wrapping_mul(31).wrapping_add(x)));
    }

    async fn close(x: u64) {
        work(x);
    }

    /// Polls a future that never waits.
    fn run(future: impl Future<Output = ()>) {
        let mut future = pin!(future);
        let polled = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_ready(), "the benchmarked futures never wait");
    }

    /// The floor: the cleanups written out as `.await`s at the end, last first.
    #[inline(never)]
    pub fn by_hand(_: &Sink, n: usize) {
        run(async {
            for i in (0..n).rev() {
                close(i as u64).await;
            }
        });
    }

    #[inline(never)]
    pub fn defer_async(_: &Sink, n: usize) {
        run(async {
            let scope = AsyncScope::new();
            for i in 0..n {
                scope.defer_async(close(i as u64));
            }
            scope.finish().await.unwrap();
        });
    }

    /// A sync closure in an async scope: the drain's cost per slot, without a future.
    #[inline(never)]
    pub fn defer_sync(_: &Sink, n: usize) {
        run(async {
            let scope = AsyncScope::new();
            for i in 0..n {
                let x = i as u64;
                scope.defer(move || work(x));
            }
            scope.finish().await.unwrap();
        });
    }
}

/// A minimal lock with separate `lock` and `unlock`, to mirror Go's `mu.Lock(); defer mu.Unlock()`.
#[derive(Default)]
pub struct SpinLock(AtomicBool);

impl SpinLock {
    #[inline(always)]
    pub fn lock(&self) {
        while self.0.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
    }

    #[inline(always)]
    pub fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Go's classic benchmark: lock, critical section, unlock, with and without defers.
pub mod locked {
    use super::*;

    /// One way to run the critical section.
    pub type Case = fn(&SpinLock, &Sink);

    #[inline(never)]
    pub fn no_defer(lock: &SpinLock, sink: &Sink) {
        lock.lock();
        work(sink, 1);
        lock.unlock();
    }

    #[inline(never)]
    pub fn one_defer(lock: &SpinLock, sink: &Sink) {
        lock.lock();
        defer! { lock.unlock(); }
        work(sink, 1);
    }

    #[inline(never)]
    pub fn nested_defer(lock: &SpinLock, sink: &Sink) {
        lock.lock();
        defer! { lock.unlock(); }
        {
            defer! { work(sink, 2); }
            work(sink, 1);
        }
    }

    #[inline(never)]
    pub fn one_scope_defer(lock: &SpinLock, sink: &Sink) {
        let scope: Scope<'_> = Scope::new();
        lock.lock();
        scope.defer(|| lock.unlock());
        work(sink, 1);
    }
}
