//! `AsyncScope` on par with Python's `AsyncExitStack`: `dismiss`, `take` (`pop_all`), the
//! outcome-aware cleanups sync and async in one LIFO order, and single-entry handles.
#![cfg(all(feature = "std", not(miri)))] // tokio's runtime; `async_core.rs` runs under Miri

mod common;

use common::SharedLog as Log;
use scoped_defer::{AsyncScope, Held, async_scope, try_async_scope};

#[tokio::test]
async fn outcome_aware_cleanups_sync_and_async_keep_one_lifo_order() {
    for fails in [false, true] {
        let log = Log::default();
        let result = try_async_scope(async |s| {
            s.defer(log.now("always 1"));
            s.defer_async_on_error(log.later("async on error"));
            s.defer_on_success(log.now("sync on success"));
            s.defer_async_on_success(log.later("async on success"));
            s.defer_on_error(log.now("sync on error"));
            s.defer_async(log.later("always 2"));
            if fails { Err("failed") } else { Ok(()) }
        })
        .await;
        assert_eq!(result.is_err(), fails);
        let expected: &[&str] = if fails {
            &["always 2", "sync on error", "async on error", "always 1"]
        } else {
            &[
                "always 2",
                "async on success",
                "sync on success",
                "always 1",
            ]
        };
        assert_eq!(log.all(), expected, "fails: {fails}");
    }
}

#[tokio::test]
async fn a_failed_cleanup_turns_the_later_ones_to_failure() {
    let log = Log::default();
    let result = try_async_scope(async |s| {
        s.defer_async_on_success(log.later("on success: skipped"));
        s.defer_on_error(log.now("on error: ran"));
        s.defer_async_fallible(async { Err::<(), _>("flush failed") });
        Ok::<_, &str>(())
    })
    .await;
    assert!(result.is_err());
    assert_eq!(log.all(), ["on error: ran"]);
}

#[tokio::test]
async fn a_cancelled_scope_counts_as_failed_for_sync_cleanups() {
    let log = Log::default();
    let scope = AsyncScope::new();
    scope.defer_on_success(log.now("on success"));
    scope.defer_on_error(log.now("on error"));
    drop(scope);
    assert_eq!(log.all(), ["on error"]);
}

#[tokio::test]
async fn dismiss_drops_everything_unrun_and_take_hands_it_over() {
    let log = Log::default();
    let mut scope = AsyncScope::with_stats();
    scope.defer(log.now("sync"));
    scope.defer_async(log.later("async"));
    scope.dismiss();
    assert_eq!(scope.stats().unwrap().dismissed, 2);
    scope.defer(log.now("first"));
    scope.defer_async(log.later("second"));
    let taken = scope.take();
    assert_eq!(scope.stats().unwrap().taken, 2);
    scope.defer(log.now("mine"));
    scope.finish().await.unwrap();
    assert_eq!(log.all(), ["mine"]);
    taken.finish().await.unwrap();
    assert_eq!(log.all(), ["mine", "second", "first"]);
}

#[tokio::test]
async fn entries_cancel_release_and_run_now_in_a_spawned_task() {
    let log = Log::default();
    let task_log = log.clone();
    // Handles are `Send`: kept across `.await` inside `tokio::spawn`.
    let kept = tokio::spawn(async move {
        let log = task_log;
        async_scope(async |s| {
            s.defer(log.now("outer"));
            let entry = s.defer_entry(log.now("cancelled"));
            let lease = s.hold_async_entry(String::from("lease"), {
                let log = log.clone();
                move |lease| async move { log.push(format!("returned {lease}")) }
            });
            let server = s.hold_async_entry(8080, {
                let log = log.clone();
                move |port| async move {
                    tokio::task::yield_now().await;
                    log.push(format!("stopped {port}"));
                }
            });
            s.defer_async(log.later("inner"));
            tokio::task::yield_now().await;
            entry.cancel();
            assert_eq!(*server, 8080);
            Held::run_now_async(server).await;
            tokio::task::yield_now().await;
            Held::release(lease)
        })
        .await
    })
    .await
    .unwrap();
    assert_eq!(kept, "lease");
    assert_eq!(log.all(), ["stopped 8080", "inner", "outer"]);
}

#[tokio::test]
async fn run_now_async_resumes_a_cleanup_panic_after_the_entry_left() {
    let log = Log::default();
    let task_log = log.clone();
    let panicked = tokio::spawn(async move {
        let scope = AsyncScope::new();
        scope.defer(task_log.now("remaining"));
        let held = scope.hold_async_entry((), |()| async { panic!("stop failed") });
        Held::run_now_async(held).await;
        task_log.push("not reached");
    })
    .await;
    // The panic resumed in the task; the scope's pending closure ran as it dropped.
    let payload = panicked.unwrap_err().into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"stop failed"));
    assert_eq!(log.all(), ["remaining"]);
}

#[tokio::test]
async fn run_now_async_cancelled_hands_the_cleanup_over() {
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let scope = AsyncScope::new();
    let held = scope.hold_async_entry(done, |done| async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        done.send("stopped").unwrap();
    });
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        Held::run_now_async(held),
    )
    .await;
    assert!(cancelled.is_err(), "timed out mid-cleanup");
    assert!(scope.is_empty());
    // With the `tokio` feature it is spawned and completes; without, it is reported and
    // dropped.
    let expected = if cfg!(feature = "tokio") {
        Some("stopped")
    } else {
        None
    };
    assert_eq!(finished.recv().await, expected);
    scope.finish().await.unwrap();
}

#[tokio::test]
async fn stats_and_limits_count_async_entries() {
    let mut scope = AsyncScope::with_limit(2);
    scope.track_stats();
    assert!(scope.is_empty());
    let first = scope.defer_entry(|| ());
    let second = scope.hold_async_entry(1, |_| async {});
    assert!(!scope.is_empty());
    assert_eq!(scope.len(), 2);
    first.run_now();
    assert_eq!(Held::release(second), 1);
    let stats = scope.stats().unwrap();
    assert_eq!(
        (stats.ran, stats.dismissed, stats.pending, stats.high_water),
        (1, 1, 0, 2)
    );
    scope.finish().await.unwrap();
}

/// The sync `Held::run_now` of an async entry cannot await: it hands the cleanup over as a
/// cancelled scope does (spawned with the `tokio` feature, else reported and dropped).
#[tokio::test]
async fn a_sync_run_now_of_an_async_entry_hands_it_over() {
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let scope = AsyncScope::new();
    let held = scope.hold_async_entry(done, |done| async move {
        done.send("stopped").unwrap();
    });
    Held::run_now(held);
    assert!(scope.is_empty());
    let expected = if cfg!(feature = "tokio") {
        Some("stopped")
    } else {
        None
    };
    assert_eq!(finished.recv().await, expected);
    scope.finish().await.unwrap();
}

/// A drain cancelled while it awaits, with a vacant slot consumed before and another below:
/// the scope's count of vacant slots went down with the one consumed, so the dropped scope
/// counts what is left right (a count too high underflows) and hands the awaited cleanup over.
#[tokio::test]
async fn a_drain_cancelled_between_vacant_slots_hands_the_awaited_cleanup_over() {
    let log = Log::default();
    let scope = AsyncScope::new();
    let below = scope.defer_entry(log.now("cancelled below"));
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let waited = log.now("waited");
    scope.defer_async(async move {
        wait.await.unwrap();
        waited();
    });
    let above = scope.defer_entry(log.now("cancelled above"));
    scope.defer(log.now("last"));
    below.cancel();
    above.cancel();
    assert_eq!(scope.len(), 2);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), scope.finish());
    assert!(timed_out.await.is_err(), "the cleanup waits");
    // With the `tokio` feature it is spawned and completes; without, it is reported and
    // dropped (and the channel with it).
    let handed_over = go.send(()).is_ok();
    assert_eq!(handed_over, cfg!(feature = "tokio"));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let expected: &[&str] = if handed_over {
        &["last", "waited"]
    } else {
        &["last"]
    };
    assert_eq!(log.all(), expected);
}
