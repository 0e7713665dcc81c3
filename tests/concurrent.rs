//! `for_each_concurrent_scoped` and `try_for_each_concurrent_scoped` on tokio, with real
//! sockets: the limit, the first failure, cancellation of the items in flight and of the whole
//! call, errors, panics, `Send`. `concurrent_core.rs` runs the core paths under Miri.
#![cfg(all(feature = "std", not(miri)))] // tokio's runtime and sockets

mod common;

use common::SharedLog as Log;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use scoped_defer::{ScopeError, for_each_concurrent_scoped, try_for_each_concurrent_scoped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A guard against a hang, never a measurement: the tests wait for counts and messages.
const HANG: Duration = Duration::from_secs(30);

/// What a loopback server saw: the connections it accepted, and those on which it read to
/// the end of the stream (the client shut down its write half, or closed).
#[derive(Default)]
struct Server {
    accepted: AtomicUsize,
    ended: AtomicUsize,
}

async fn eof_server() -> io::Result<(std::net::SocketAddr, Arc<Server>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = Arc::new(Server::default());
    let counts = Arc::clone(&server);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let mut request = Vec::new();
                if stream.read_to_end(&mut request).await.is_ok() {
                    counts.ended.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    Ok((address, server))
}

/// What the clients of a TCP test count.
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    connected: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
    shut_down: AtomicUsize,
    failed: AtomicBool,
    started_after_failure: AtomicUsize,
}

impl Counts {
    fn start(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.failed.load(Ordering::SeqCst) {
            self.started_after_failure.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn connect(&self) {
        self.connected.fetch_add(1, Ordering::SeqCst);
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(open, Ordering::SeqCst);
    }
}

/// One client connection, held by the item's scope, whose cleanup shuts it down and counts
/// it; items from `block_from` on then wait forever, so that only cancellation ends them.
async fn client(
    s: &scoped_defer::AsyncScope,
    counts: &Arc<Counts>,
    address: std::net::SocketAddr,
    i: usize,
    block_from: usize,
) -> io::Result<()> {
    counts.start();
    let cleanup_counts = Arc::clone(counts);
    // An item cancelled here has no connection yet, and nothing to shut down.
    let stream = TcpStream::connect(address).await?;
    counts.connect();
    let conn = s.hold_async_fallible(stream, move |mut conn| async move {
        let shut_down = conn.shutdown().await;
        cleanup_counts.open.fetch_sub(1, Ordering::SeqCst);
        cleanup_counts.shut_down.fetch_add(1, Ordering::SeqCst);
        shut_down
    });
    conn.write_all(b"request").await?;
    if i >= block_from {
        std::future::pending::<()>().await;
    }
    tokio::task::yield_now().await;
    Ok(())
}

/// Waits until the server has accepted every connection made and read each to its end
/// (a connection cancelled while it was being made may add one to both).
async fn assert_server_saw_eof_on_each(server: &Server, connected: usize) {
    let all_ended = tokio::time::timeout(HANG, async {
        loop {
            let accepted = server.accepted.load(Ordering::SeqCst);
            if accepted >= connected && server.ended.load(Ordering::SeqCst) == accepted {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    all_ended
        .await
        .expect("every connection reaches its end of stream");
}

/// The test: 1,000 connections at limit 50, an error at item 100; items 60 to 99 are
/// still waiting when it comes, so they are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_at_limit_fifty_stop_at_the_first_error() -> io::Result<()> {
    let (address, server) = eof_server().await?;
    let counts = Arc::new(Counts::default());
    let task_counts = Arc::clone(&counts);
    // Spawned: the loop's future is `Send`.
    let result = tokio::spawn(async move {
        let counts = task_counts;
        // Inside a spawned task, the body's future owns what it uses across an `.await`.
        try_for_each_concurrent_scoped(0..1000, 50, async move |s, i| {
            let counts = Arc::clone(&counts);
            if i == 100 {
                counts.start();
                counts.failed.store(true, Ordering::SeqCst);
                return Err(io::Error::other("item 100 failed"));
            }
            client(s, &counts, address, i, 60).await
        })
        .await
    })
    .await
    .expect("the loop does not panic");
    let error = result.unwrap_err();
    assert_eq!(
        error.body_error().map(ToString::to_string).as_deref(),
        Some("item 100 failed")
    );
    assert!(error.cleanup_errors().is_none(), "every shutdown succeeded");
    let started = counts.started.load(Ordering::SeqCst);
    assert_eq!(
        started, 101,
        "item 100 fails in its first poll, before item 101 starts"
    );
    assert_eq!(counts.started_after_failure.load(Ordering::SeqCst), 0);
    let peak = counts.peak.load(Ordering::SeqCst);
    assert!((2..=50).contains(&peak), "peak {peak}");
    // Counted before the call returned: every connection made (item 100 makes none, and
    // items cancelled while connecting have none) was shut down.
    let connected = counts.connected.load(Ordering::SeqCst);
    // Item 100 started once at most 49 others were in flight: 51 had ended, connected.
    assert!(connected >= 51, "connected {connected}");
    assert_eq!(counts.shut_down.load(Ordering::SeqCst), connected);
    assert_eq!(counts.open.load(Ordering::SeqCst), 0);
    assert_server_saw_eof_on_each(&server, connected).await;
    Ok(())
}

/// The same loop cancelled as a whole by a timeout while 50 items wait: every started item's
/// scope hands its shutdown to the runtime, as a cancelled `AsyncScope` does.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_cancelling_the_whole_loop_hands_every_shutdown_to_the_runtime() -> io::Result<()>
{
    let (address, server) = eof_server().await?;
    let counts = Arc::new(Counts::default());
    let task_counts = Arc::clone(&counts);
    let timed_out = tokio::spawn(async move {
        let counts = task_counts;
        // Items 500 on wait forever: the loop stalls half-way, with 50 of them open.
        tokio::time::timeout(
            Duration::from_millis(300),
            try_for_each_concurrent_scoped(0..1000, 50, async move |s, i| {
                let counts = Arc::clone(&counts);
                client(s, &counts, address, i, 500).await
            }),
        )
        .await
    })
    .await
    .expect("the loop does not panic");
    assert!(timed_out.is_err(), "the loop cannot end by itself");
    let started = counts.started.load(Ordering::SeqCst);
    assert!(started <= 550, "started {started}");
    assert!(counts.peak.load(Ordering::SeqCst) <= 50);
    let connected = counts.connected.load(Ordering::SeqCst);
    // The server sees each end of stream only after its shutdown ran on the runtime.
    assert_server_saw_eof_on_each(&server, connected).await;
    let shut_down = tokio::time::timeout(HANG, async {
        while counts.shut_down.load(Ordering::SeqCst) < connected {
            tokio::task::yield_now().await;
        }
    });
    shut_down.await.expect("every spawned shutdown completes");
    assert_eq!(counts.shut_down.load(Ordering::SeqCst), connected);
    Ok(())
}

#[tokio::test]
async fn the_failed_body_is_primary_and_every_cleanup_error_is_suppressed_in_order() {
    let log = Log::default();
    let result = try_for_each_concurrent_scoped(0..4, 4, async |s, i| {
        let log = log.clone();
        s.defer_async_fallible(async move {
            tokio::task::yield_now().await;
            log.push(format!("cleanup {i}"));
            Err::<(), _>(format!("cleanup {i} failed"))
        });
        // Items 0, 1 and 3 wait; item 2 fails once all four have started.
        tokio::task::yield_now().await;
        if i == 2 {
            return Err(format!("body {i} failed"));
        }
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    let Err(ScopeError::Body {
        error,
        suppressed: Some(suppressed),
    }) = result
    else {
        panic!("expected a body error with suppressed cleanup errors: {result:?}");
    };
    assert_eq!(error, "body 2 failed");
    let suppressed: Vec<String> = suppressed.iter().map(ToString::to_string).collect();
    // The failed item's own first, then the cancelled ones in the order they ended.
    assert_eq!(suppressed[0], "cleanup 2 failed");
    let mut others = suppressed[1..].to_vec();
    others.sort();
    assert_eq!(
        others,
        ["cleanup 0 failed", "cleanup 1 failed", "cleanup 3 failed"]
    );
    assert_eq!(log.all().len(), 4, "every cleanup was awaited");
}

#[tokio::test]
async fn a_failed_cleanup_stops_new_items_and_is_the_error() {
    let started = AtomicUsize::new(0);
    let result = try_for_each_concurrent_scoped(0..100, 1, async |s, i| {
        started.fetch_add(1, Ordering::Relaxed);
        s.defer_async_fallible(async move {
            if i == 3 {
                Err("close 3 failed")
            } else {
                Ok(())
            }
        });
        Ok::<(), io::Error>(())
    })
    .await;
    let Err(ScopeError::Cleanup(errors)) = result else {
        panic!("expected a cleanup error: {result:?}");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors.first().to_string(), "close 3 failed");
    assert_eq!(started.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn on_error_cleanups_run_for_the_failed_and_the_cancelled_items_only() {
    let log = Log::default();
    let result = try_for_each_concurrent_scoped(0..3, 3, async |s, i| {
        let log = log.clone();
        s.defer_async_on_error(async move { log.push(format!("rolled back {i}")) });
        if i == 0 {
            return Ok(());
        }
        tokio::task::yield_now().await;
        match i {
            1 => Err("item 1 failed"),
            _ => std::future::pending().await,
        }
    })
    .await;
    assert_eq!(result.unwrap_err().body_error(), Some(&"item 1 failed"));
    let mut all = log.all();
    all.sort();
    assert_eq!(all, ["rolled back 1", "rolled back 2"]);
}

/// Limit 1: one item at a time, each ending (cleanups included) before the next starts, in
/// the iterator's order.
#[tokio::test]
async fn limit_one_is_a_sequential_loop() {
    let log = Log::default();
    for_each_concurrent_scoped(0..5, 1, async |s, i| {
        log.push(format!("start {i}"));
        let cleanup_log = log.clone();
        s.defer_async(async move {
            tokio::task::yield_now().await;
            cleanup_log.push(format!("cleanup {i}"));
        });
        tokio::task::yield_now().await;
        log.push(format!("end {i}"));
    })
    .await;
    let expected: Vec<String> = (0..5)
        .flat_map(|i| {
            [
                format!("start {i}"),
                format!("end {i}"),
                format!("cleanup {i}"),
            ]
        })
        .collect();
    assert_eq!(log.all(), expected);
}

#[tokio::test]
async fn an_empty_input_calls_nothing() {
    let called = AtomicBool::new(false);
    let result = try_for_each_concurrent_scoped(Vec::<u8>::new(), 4, async |_, _| {
        called.store(true, Ordering::Relaxed);
        Err::<(), _>("never")
    })
    .await;
    assert!(result.is_ok());
    assert!(!called.load(Ordering::Relaxed));
}

#[tokio::test]
#[should_panic(expected = "a limit of 0 would start no item")]
async fn limit_zero_panics() {
    for_each_concurrent_scoped([1], 0, async |_, _| ()).await;
}

/// A body panic stops new items, cancels the others, and resumes once every cleanup, of the
/// panicking item too, has been awaited; the cleanup errors it keeps from being returned are
/// reported, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_panic_resumes_after_every_cleanup() {
    let log = Log::default();
    let (started, task_log) = (Arc::new(AtomicUsize::new(0)), log.clone());
    let task_started = Arc::clone(&started);
    let joined = tokio::spawn(async move {
        try_for_each_concurrent_scoped(0..100, 8, async move |s, i| {
            task_started.fetch_add(1, Ordering::SeqCst);
            let log = task_log.clone();
            s.defer_async(async move {
                tokio::task::yield_now().await;
                log.push(format!("cleanup {i}"));
            });
            tokio::task::yield_now().await;
            if i == 6 {
                panic!("body 6 panicked");
            }
            std::future::pending::<()>().await;
            Ok::<(), io::Error>(())
        })
        .await
    })
    .await;
    let payload = joined.unwrap_err().into_panic();
    assert_eq!(*payload.downcast_ref::<&str>().unwrap(), "body 6 panicked");
    let started = started.load(Ordering::SeqCst);
    assert_eq!(log.all().len(), started, "every started item's cleanup ran");
    assert!(log.all().contains(&"cleanup 6".to_string()));
}

/// A cleanup panic is caught with the item's other cleanups still awaited; it stops new items
/// and resumes after the others' cleanups too.
#[test]
fn a_cleanup_panic_resumes_after_every_cleanup() {
    common::quiet_panics();
    let log = Log::default();
    let started = AtomicUsize::new(0);
    let outcome = common::catch_expected(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(for_each_concurrent_scoped(0..100, 5, async |s, i| {
            started.fetch_add(1, Ordering::Relaxed);
            let log = log.clone();
            s.defer_async(async move {
                tokio::task::yield_now().await;
                log.push(format!("after {i}"));
            });
            if i == 4 {
                s.defer_async(async { panic!("cleanup 4 panicked") });
            } else {
                tokio::task::yield_now().await;
                std::future::pending::<()>().await;
            }
        }))
    });
    let payload = outcome.unwrap_err();
    assert_eq!(
        *payload.downcast_ref::<&str>().unwrap(),
        "cleanup 4 panicked"
    );
    let started = started.load(Ordering::Relaxed);
    assert_eq!(started, 5, "items 0 to 3 wait, item 4 fails at once");
    assert_eq!(log.all().len(), started);
}

/// The first panic wins, a body's panic before a cleanup's: a body that panics with slow
/// cleanups still wins over another item's cleanup that panics afterwards.
#[test]
fn the_first_panic_wins() {
    common::quiet_panics();
    let outcome = common::catch_expected(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(for_each_concurrent_scoped(0..2, 2, async |s, i| {
            if i == 0 {
                s.defer_async(async {
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                });
                tokio::task::yield_now().await;
                panic!("body 0 panicked first");
            }
            s.defer_async(async { panic!("cleanup 1 panicked later") });
            std::future::pending::<()>().await;
        }))
    });
    let payload = outcome.unwrap_err();
    assert_eq!(
        *payload.downcast_ref::<&str>().unwrap(),
        "body 0 panicked first"
    );
}

#[tokio::test]
#[should_panic(expected = "and nothing could return the error")]
async fn for_each_concurrent_scoped_panics_for_an_error_nobody_can_return() {
    for_each_concurrent_scoped(0..3, 2, async |s, _| {
        s.defer_async_fallible(async { Err::<(), _>("lost?") });
    })
    .await;
}

/// Bodies borrow from the caller: a `&mut`-free shared borrow of a local, and the items by
/// reference.
#[tokio::test]
async fn bodies_borrow_from_the_caller() {
    let names = vec![String::from("a"), String::from("b"), String::from("c")];
    let total = AtomicUsize::new(0);
    try_for_each_concurrent_scoped(&names, 2, async |s, name| {
        s.defer(|| ());
        tokio::task::yield_now().await;
        total.fetch_add(name.len(), Ordering::Relaxed);
        Ok::<(), io::Error>(())
    })
    .await
    .unwrap();
    assert_eq!(total.into_inner(), 3);
}

/// The items run concurrently: with limit 3, three items that each wait for the other two
/// can all finish.
#[tokio::test]
async fn items_up_to_the_limit_run_at_once() {
    let barrier = tokio::sync::Barrier::new(3);
    for_each_concurrent_scoped(0..3, 3, async |_, _| {
        barrier.wait().await;
    })
    .await;
}

/// A runtime that shuts down with the loop in flight drops it: every started item's scope is
/// cancelled and its cleanups, spawned on a runtime that is going away, are dropped once (and
/// reported), without a panic or an abort.
#[test]
fn a_runtime_shutdown_drops_every_started_item_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (started, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (task_started, task_dropped) = (Arc::clone(&started), Arc::clone(&dropped));
    runtime.spawn(for_each_concurrent_scoped(0..10, 4, async move |s, _| {
        task_started.fetch_add(1, Ordering::SeqCst);
        let token = Counted(Arc::clone(&task_dropped));
        s.defer_async(async move { drop(token) });
        std::future::pending::<()>().await;
    }));
    runtime.block_on(async {
        while started.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
    });
    drop(runtime);
    assert_eq!(started.load(Ordering::SeqCst), 4);
    assert_eq!(dropped.load(Ordering::SeqCst), 4);
}

/// The loop's end drops the cleanup errors that nothing can return, each drop's panic caught:
/// before, with a panic to resume, the errors were dropped in its unwind, which aborted the
/// process; and with none, in the unwind of the panic that says nothing can return them.
#[test]
fn errors_whose_drop_panics_leave_the_loop_s_own_panic_alone() {
    common::in_child(
        "errors_whose_drop_panics_leave_the_loop_s_own_panic_alone",
        || {
            common::quiet_panics();
            static DROPS: AtomicUsize = AtomicUsize::new(0);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let panicked = common::catch_expected(|| {
                runtime.block_on(try_for_each_concurrent_scoped(0..2, 2, async |s, i| {
                    s.defer_async_fallible(async { Err::<(), _>(common::DropPanics(&DROPS)) });
                    if i == 1 {
                        panic!("body 1 panicked");
                    }
                    // Still running when item 1 panics: cancelled, its cleanup awaited.
                    std::future::pending::<()>().await;
                    Ok::<(), io::Error>(())
                }))
            });
            let payload = panicked.expect_err("the body's panic resumes");
            assert_eq!(*payload.downcast_ref::<&str>().unwrap(), "body 1 panicked");
            assert_eq!(DROPS.load(Ordering::SeqCst), 2);

            let panicked = common::catch_expected(|| {
                runtime.block_on(for_each_concurrent_scoped(0..1, 1, async |s, _| {
                    s.defer_async_fallible(async { Err::<(), _>(common::DropPanics(&DROPS)) });
                }))
            });
            let payload = panicked.expect_err("nothing can return the error");
            let message = payload.downcast_ref::<String>().unwrap();
            assert!(
                message.starts_with("cleanup failed: close failed"),
                "{message}"
            );
            assert_eq!(DROPS.load(Ordering::SeqCst), 3);
        },
    );
}
