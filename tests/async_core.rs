//! `AsyncScope` without a runtime: a hand-written executor, so that Miri runs these too. They
//! cover the storage (held values across growth, every slot consumed once) and the paths
//! where futures are never awaited.

#![cfg(feature = "std")]

mod common;

use common::{YieldOnce, block_on};

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use scoped_defer::{AsyncScope, try_async_scope};

type Log = Arc<Mutex<Vec<usize>>>;

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_held_value_stays_put_while_the_storage_grows() {
    const MORE: usize = 1000;
    let log = Log::default();
    let scope = AsyncScope::new();
    let for_held = Arc::clone(&log);
    let held = scope.hold_async(vec![0_usize], move |values| async move {
        YieldOnce(false).await;
        for_held.lock().unwrap().extend(values);
    });
    for i in 1..=MORE {
        let log = Arc::clone(&log);
        if i % 2 == 0 {
            scope.defer(move || log.lock().unwrap().push(i));
        } else {
            scope.defer_async(async move {
                YieldOnce(false).await;
                log.lock().unwrap().push(i);
            });
        }
    }
    // Written after the storage grew into its heap segments.
    held.push(MORE + 1);
    block_on(scope.finish()).unwrap();
    let expected: Vec<usize> = (1..=MORE).rev().chain([0, MORE + 1]).collect();
    assert_eq!(*log.lock().unwrap(), expected);
}

#[test]
fn a_dropped_scope_runs_sync_closures_and_drops_everything_else_once() {
    let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let scope = AsyncScope::new();
    for i in 0..30 {
        let token = Counted(Arc::clone(&dropped));
        match i % 3 {
            0 => {
                let ran = Arc::clone(&ran);
                scope.defer(move || {
                    let _token = token;
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            }
            1 => scope.defer_async(async move {
                let _token = token;
                unreachable!("never awaited");
            }),
            _ => {
                scope.hold_async(token, |_| async { unreachable!("never awaited") });
            }
        }
    }
    drop(scope);
    assert_eq!(ran.load(Ordering::Relaxed), 10);
    assert_eq!(dropped.load(Ordering::Relaxed), 30);
}

#[test]
fn a_cleanup_panic_does_not_stop_the_others_and_the_first_resumes() {
    let log = Log::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let scope = AsyncScope::new();
    for i in 0..6 {
        let (log, token) = (Arc::clone(&log), Counted(Arc::clone(&dropped)));
        match i {
            1 => scope.defer_async(async move {
                let _token = token;
                YieldOnce(false).await;
                panic!("async {i}");
            }),
            4 => scope.defer(move || {
                let _token = token;
                panic!("sync {i}");
            }),
            _ => scope.defer_async(async move {
                let _token = token;
                YieldOnce(false).await;
                log.lock().unwrap().push(i);
            }),
        }
    }
    let payload = panic::catch_unwind(AssertUnwindSafe(|| block_on(scope.finish()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<String>().unwrap(), "sync 4");
    assert_eq!(*log.lock().unwrap(), [5, 3, 2, 0]);
    assert_eq!(dropped.load(Ordering::Relaxed), 6);
}

#[test]
fn a_drain_dropped_midway_drops_the_cleanup_it_was_awaiting_and_the_rest() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let log = Log::default();
    let scope = AsyncScope::new();
    let (token, early) = (Counted(Arc::clone(&dropped)), Arc::clone(&log));
    scope.defer_async(async move {
        let _token = token;
        early.lock().unwrap().push(1);
    });
    let token = Counted(Arc::clone(&dropped));
    scope.defer_async(async move {
        let _token = token;
        std::future::pending::<()>().await;
    });
    let late = Arc::clone(&log);
    scope.defer(move || late.lock().unwrap().push(3));
    let mut finishing = Box::pin(scope.finish());
    let polled = finishing
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "stuck in the second cleanup");
    assert_eq!((*log.lock().unwrap()).clone(), [3]);
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    drop(finishing);
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    assert_eq!(
        *log.lock().unwrap(),
        [3],
        "the first cleanup was dropped, not run"
    );
}

#[test]
fn on_error_cleanups_see_the_failure_of_a_sync_panic() {
    let log = Log::default();
    let scope_log = Arc::clone(&log);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        block_on(try_async_scope(async |s| {
            let rolled_back = Arc::clone(&scope_log);
            s.defer_async_on_error(async move { rolled_back.lock().unwrap().push(1) });
            s.defer(|| panic!("sync cleanup"));
            Ok::<_, std::io::Error>(())
        }))
    }));
    assert!(outcome.is_err());
    assert_eq!(*log.lock().unwrap(), [1]);
}

/// Registration from two threads at once is refused with a panic rather than racing: every
/// registration either lands (and runs exactly once) or panics.
#[test]
fn registration_from_two_threads_lands_or_panics() {
    const EACH: usize = if cfg!(miri) { 50 } else { 5_000 };
    let ran = Arc::new(AtomicUsize::new(0));
    let scope = AsyncScope::new();
    let landed: usize = thread::scope(|threads| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                threads.spawn(|| {
                    let mut landed = 0;
                    for _ in 0..EACH {
                        let ran = Arc::clone(&ran);
                        let registered = panic::catch_unwind(AssertUnwindSafe(|| {
                            scope.defer(move || {
                                ran.fetch_add(1, Ordering::Relaxed);
                            });
                        }));
                        match registered {
                            Ok(()) => landed += 1,
                            Err(payload) => assert_eq!(
                                *payload.downcast_ref::<&str>().unwrap(),
                                "two threads used one AsyncScope at the same moment"
                            ),
                        }
                    }
                    landed
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    block_on(scope.finish()).unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), landed);
    assert!(landed > 0);
}

/// A cleanup whose future panics when dropped after it completed: the panic is caught like
/// one in its poll, and the other cleanups still run.
#[test]
fn a_cleanup_future_that_panics_on_drop_counts_as_a_panicking_cleanup() {
    struct ReadyThenPanicOnDrop;
    impl Future for ReadyThenPanicOnDrop {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Ready(())
        }
    }
    impl Drop for ReadyThenPanicOnDrop {
        fn drop(&mut self) {
            panic!("dropped after completing");
        }
    }
    let log = Log::default();
    let scope = AsyncScope::new();
    let first = Arc::clone(&log);
    scope.defer(move || first.lock().unwrap().push(1));
    scope.defer_async(ReadyThenPanicOnDrop);
    let last = Arc::clone(&log);
    scope.defer_async(async move { last.lock().unwrap().push(3) });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| block_on(scope.finish()))).unwrap_err();
    assert_eq!(
        *payload.downcast_ref::<&str>().unwrap(),
        "dropped after completing"
    );
    assert_eq!(*log.lock().unwrap(), [3, 1]);
}

/// Entries of an `AsyncScope` across growth: released, cancelled, run now (awaited) and kept,
/// each consumed once, the rest in LIFO order.
#[test]
fn async_entries_are_consumed_once_across_growth() {
    use scoped_defer::Held;
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    let kept = block_on(async {
        let scope = AsyncScope::new();
        let mut held = Vec::new();
        for i in 0..20 {
            let (log, counted) = (log.clone(), Counted(drops.clone()));
            held.push(scope.hold_async_entry(counted, move |counted| async move {
                YieldOnce(false).await;
                log.lock().unwrap().push(i);
                drop(counted);
            }));
        }
        let entry = {
            let (log, counted) = (log.clone(), Counted(drops.clone()));
            scope.defer_entry(move || {
                log.lock().unwrap().push(100);
                drop(counted);
            })
        };
        let mut released = Vec::new();
        for (i, held) in held.into_iter().enumerate().rev() {
            match i % 4 {
                0 => released.push(Held::release(held)),
                1 => Held::run_now_async(held).await,
                _ => {}
            }
        }
        entry.cancel();
        assert_eq!(scope.len(), 10);
        scope.finish().await.unwrap();
        released.len()
    });
    assert_eq!(kept, 5);
    let mut expected: Vec<usize> = (0..20).rev().filter(|i| i % 4 == 1).collect();
    expected.extend((0..20).rev().filter(|i| i % 4 >= 2));
    assert_eq!(*log.lock().unwrap(), expected);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        21,
        "every capture dropped once"
    );
}
