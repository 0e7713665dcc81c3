//! The concurrent loops without a runtime: a hand-written executor, so that Miri runs these
//! too. They cover the slots and their wakers (woken from another thread too), cancellation
//! of the items in flight, the drop of the whole loop, and every capture dropped once.

#![cfg(feature = "std")]

mod common;

use common::{YieldOnce, block_on};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use scoped_defer::{
    AsyncScope, ScopeError, for_each_concurrent_scoped, try_for_each_concurrent_scoped,
};

fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

/// Pending once, woken from another thread.
struct WokenFromAThread(Option<std::thread::JoinHandle<()>>);

impl Future for WokenFromAThread {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        match self.0.take() {
            Some(thread) => {
                thread.join().unwrap();
                Poll::Ready(())
            }
            None => {
                let waker = context.waker().clone();
                self.0 = Some(std::thread::spawn(move || waker.wake()));
                Poll::Pending
            }
        }
    }
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: String) {
    log.lock().unwrap().push(entry);
}

#[test]
fn every_item_runs_and_awaits_its_cleanups_last_first() {
    let log = Log::default();
    block_on(for_each_concurrent_scoped(0..6, 3, async |s, i| {
        let (first, second) = (Arc::clone(&log), Arc::clone(&log));
        s.defer_async(async move {
            yield_once().await;
            push(&first, format!("{i}: registered first"));
        });
        s.defer(move || push(&second, format!("{i}: registered last")));
        if i % 2 == 0 {
            WokenFromAThread(None).await;
        } else {
            yield_once().await;
        }
    }));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 12);
    for i in 0..6 {
        let last = log
            .iter()
            .position(|e| *e == format!("{i}: registered last"));
        let first = log
            .iter()
            .position(|e| *e == format!("{i}: registered first"));
        assert!(last.unwrap() < first.unwrap(), "{log:?}");
    }
}

/// The first error cancels the items in flight at their next `.await`: their bodies' futures
/// are dropped (and what they captured with them), their cleanups awaited, their errors kept.
#[test]
fn the_first_error_cancels_the_others_and_awaits_their_cleanups() {
    let (captured, cleaned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = AtomicUsize::new(0);
    let result = block_on(try_for_each_concurrent_scoped(0..100, 4, async |s, i| {
        started.fetch_add(1, Ordering::SeqCst);
        let token = Counted(Arc::clone(&captured));
        let cleaned = Arc::clone(&cleaned);
        s.defer_async_fallible(async move {
            yield_once().await;
            cleaned.fetch_add(1, Ordering::SeqCst);
            if i == 1 {
                Err("cleanup 1 failed")
            } else {
                Ok(())
            }
        });
        yield_once().await;
        if i == 2 {
            return Err("body 2 failed");
        }
        std::future::pending::<()>().await;
        drop(token);
        Ok(())
    }));
    let Err(ScopeError::Body { error, suppressed }) = result else {
        panic!("expected the body's error: {result:?}");
    };
    assert_eq!(error, "body 2 failed");
    assert_eq!(suppressed.unwrap().first().to_string(), "cleanup 1 failed");
    assert_eq!(started.load(Ordering::SeqCst), 4);
    assert_eq!(cleaned.load(Ordering::SeqCst), 4);
    assert_eq!(captured.load(Ordering::SeqCst), 4);
}

/// Dropping the whole loop's future (here outside any runtime): every started item's scope
/// is cancelled, its sync closures run at once, its futures dropped once (and reported).
#[test]
fn dropping_the_loop_cancels_every_started_scope() {
    let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut running = Box::pin(for_each_concurrent_scoped(0..10, 3, async |s, _| {
        let ran = Arc::clone(&ran);
        s.defer(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
        let token = Counted(Arc::clone(&dropped));
        s.defer_async(async move {
            let _token = token;
            unreachable!("never awaited");
        });
        std::future::pending::<()>().await;
    }));
    let polled = running
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    drop(running);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
}

/// A body whose future panics when dropped at its cancellation: the panic is caught, the
/// item's cleanups still awaited, and the first panic (the failure's) is the one that resumes.
#[test]
fn a_body_that_panics_when_cancelled() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropped at cancellation");
        }
    }
    common::quiet_panics();
    let cleaned = Arc::new(AtomicUsize::new(0));
    let caught = common::catch_expected(|| {
        block_on(try_for_each_concurrent_scoped(0..3, 3, async |s, i| {
            let cleaned = Arc::clone(&cleaned);
            s.defer(move || {
                cleaned.fetch_add(1, Ordering::SeqCst);
            });
            let _bomb = PanicsOnDrop;
            yield_once().await;
            if i == 1 {
                std::mem::forget(_bomb);
                panic!("body 1 panicked");
            }
            std::future::pending::<()>().await;
            Ok::<(), ()>(())
        }))
    });
    let payload = caught.unwrap_err();
    assert_eq!(*payload.downcast_ref::<&str>().unwrap(), "body 1 panicked");
    assert_eq!(cleaned.load(Ordering::SeqCst), 3);
}

/// An iterator that panics stops the loop like a body's panic: the items in flight are
/// cancelled and their cleanups awaited before the panic resumes.
#[test]
fn an_iterator_that_panics() {
    common::quiet_panics();
    let cleaned = Arc::new(AtomicUsize::new(0));
    let items = (0..10).map(|i| if i == 2 { panic!("no item 2") } else { i });
    let caught = common::catch_expected(|| {
        block_on(for_each_concurrent_scoped(items, 5, async |s, _| {
            let cleaned = Arc::clone(&cleaned);
            s.defer(move || {
                cleaned.fetch_add(1, Ordering::SeqCst);
            });
            std::future::pending::<()>().await;
        }))
    });
    assert_eq!(
        *caught.unwrap_err().downcast_ref::<&str>().unwrap(),
        "no item 2"
    );
    assert_eq!(cleaned.load(Ordering::SeqCst), 2);
}

/// More items than one poll starts, each ending without an `.await`: the loop yields between
/// batches and still runs them all.
#[test]
fn items_that_never_suspend() {
    let count = Arc::new(AtomicUsize::new(0));
    block_on(for_each_concurrent_scoped(
        0..common::scaled(1000),
        2,
        async |s, _| {
            let count = Arc::clone(&count);
            s.defer(move || {
                count.fetch_add(1, Ordering::Relaxed);
            });
        },
    ));
    assert_eq!(count.load(Ordering::Relaxed), common::scaled(1000));
}

#[test]
fn limit_one_and_an_empty_input() {
    let log = Log::default();
    block_on(for_each_concurrent_scoped(0..3, 1, async |s, i| {
        push(&log, format!("start {i}"));
        let cleanup = Arc::clone(&log);
        s.defer_async(async move { push(&cleanup, format!("cleanup {i}")) });
        yield_once().await;
    }));
    let expected: Vec<String> = (0..3)
        .flat_map(|i| [format!("start {i}"), format!("cleanup {i}")])
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
    block_on(for_each_concurrent_scoped(
        0..0,
        1,
        async |_, _| unreachable!(),
    ));
}

/// A body whose future panics when polled, then again when dropped: the first panic is the
/// one that resumes.
#[test]
fn a_body_future_that_panics_in_poll_and_in_drop() {
    struct PanicsTwice;
    impl Future for PanicsTwice {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            panic!("in poll");
        }
    }
    impl Drop for PanicsTwice {
        fn drop(&mut self) {
            panic!("in drop");
        }
    }
    common::quiet_panics();
    let caught = common::catch_expected(|| {
        block_on(for_each_concurrent_scoped(0..1, 1, |_: &AsyncScope, _| {
            PanicsTwice
        }))
    });
    assert_eq!(
        *caught.unwrap_err().downcast_ref::<&str>().unwrap(),
        "in poll"
    );
}

/// Items that end without suspending are started a bounded number at a time: the loop
/// yields to its executor between batches instead of running the whole iterator in one poll.
#[test]
fn the_loop_yields_between_batches_of_items_that_never_suspend() {
    let count = Arc::new(AtomicUsize::new(0));
    let mut running = Box::pin(for_each_concurrent_scoped(0..1000, 2, async |_, _| {
        count.fetch_add(1, Ordering::Relaxed);
    }));
    let polled = running
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "yielded");
    let started = count.load(Ordering::Relaxed);
    assert!((1..1000).contains(&started), "started {started}");
    drop(running);
}
