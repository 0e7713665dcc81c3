//! `SendScope`: only `Send` closures, and the scope itself moves across threads and awaits.
mod common;

use common::block_on;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use scoped_defer::SendScope;

fn assert_send<T: Send>(value: T) -> T {
    value
}

/// A future that is pending once, so that anything held across it lives through a suspension.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_send_scope_runs_its_closures_on_the_thread_that_drops_it() {
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let scope: SendScope<'static> = SendScope::new();
    for i in 0..3 {
        let ran_on = Arc::clone(&ran_on);
        scope.defer(move || {
            ran_on
                .lock()
                .unwrap()
                .push((i, std::thread::current().id()))
        });
    }
    let worker = std::thread::spawn(move || {
        drop(scope);
        std::thread::current().id()
    });
    let worker_id = worker.join().unwrap();
    assert_eq!(
        *ran_on.lock().unwrap(),
        [(2, worker_id), (1, worker_id), (0, worker_id)]
    );
}

#[test]
fn a_send_scope_can_be_held_across_an_await_in_a_send_future() {
    let closed = AtomicUsize::new(0);
    let future = assert_send(async {
        let scope: SendScope<'_> = SendScope::new();
        scope.defer(|| {
            closed.fetch_add(1, Ordering::SeqCst);
        });
        YieldOnce(false).await;
        assert_eq!(
            closed.load(Ordering::SeqCst),
            0,
            "still pending across the await"
        );
        scope.finish().unwrap();
    });
    block_on(future);
    assert_eq!(closed.load(Ordering::SeqCst), 1);
}

#[test]
fn send_scopes_keep_the_scope_semantics() {
    let log = Mutex::new(Vec::new());
    let mut scope: SendScope<'_, 2> = SendScope::default();
    scope.track_stats();
    for i in 0..4 {
        let log = &log;
        scope.defer(move || log.lock().unwrap().push(i));
    }
    scope.defer_fallible(|| Err::<(), _>("failed"));
    let errors = scope.try_run_now().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(*log.lock().unwrap(), [3, 2, 1, 0]);
    assert_eq!(scope.stats().unwrap().ran, 5);
    assert!(scope.spilled());
}
