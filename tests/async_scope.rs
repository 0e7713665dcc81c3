//! `AsyncScope`, `async_scope` and `try_async_scope` on tokio, with real sockets and files:
//! order, panics, errors, `Send`, and what cancellation does with the pending cleanups.
#![cfg(all(feature = "std", not(miri)))] // tokio's runtime, sockets and files; `async_core.rs` runs under Miri

mod common;

use common::SharedLog as Log;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use scoped_defer::{AsyncScope, ScopeError, async_scope, try_async_scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

#[tokio::test]
async fn every_kind_of_cleanup_runs_last_first() {
    let log = Log::default();
    let scope = AsyncScope::new();
    scope.defer_async(log.later("async 1"));
    let for_sync = log.clone();
    scope.defer(move || for_sync.push("sync 2"));
    let held = scope.hold_async(String::from("held 3"), {
        let log = log.clone();
        move |value| async move {
            tokio::task::yield_now().await;
            log.push(value);
        }
    });
    let for_fallible = log.clone();
    scope.defer_async_fallible(async move {
        for_fallible.push("fallible 4");
        Ok::<_, io::Error>(())
    });
    held.push_str(" (edited)");
    assert!(log.all().is_empty(), "nothing runs before the scope ends");
    scope.finish().await.unwrap();
    assert_eq!(
        log.all(),
        ["fallible 4", "held 3 (edited)", "sync 2", "async 1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_holding_a_scope_across_await_can_be_spawned() {
    let log = Log::default();
    let (task_log, scope_log) = (log.clone(), log.clone());
    // Both forms: the function form, which holds `&AsyncScope` across `.await`, and a
    // scope owned by the task with a value held across `.await`.
    let in_function = tokio::spawn(async move {
        async_scope(async |s| {
            let held = s.hold_async(Vec::new(), {
                let log = task_log.clone();
                move |items: Vec<&str>| async move { log.push(items.join(",")) }
            });
            tokio::task::yield_now().await;
            held.push("a");
            tokio::time::sleep(Duration::from_millis(1)).await;
            held.push("b");
        })
        .await;
    });
    let owned = tokio::spawn(async move {
        let scope = AsyncScope::new();
        let count = scope.hold_async(0, move |n| async move {
            scope_log.push(if n == 2 { "two" } else { "?" });
        });
        for _ in 0..2 {
            tokio::task::yield_now().await;
            *count += 1;
        }
        scope.finish().await
    });
    in_function.await.unwrap();
    owned.await.unwrap().unwrap();
    let mut all = log.all();
    all.sort();
    assert_eq!(all, ["a,b", "two"]);
}

#[tokio::test]
async fn a_body_panic_awaits_the_cleanups_then_resumes() {
    let log = Log::default();
    let task_log = log.clone();
    let joined = tokio::spawn(async move {
        async_scope(async |s| {
            s.defer_async(task_log.later("cleaned up"));
            s.defer_async_on_error(task_log.later("rolled back"));
            tokio::task::yield_now().await;
            panic!("body failed");
        })
        .await
    })
    .await;
    let payload = joined.unwrap_err().into_panic();
    assert_eq!(panic_message(&*payload), "body failed");
    assert_eq!(log.all(), ["rolled back", "cleaned up"]);
}

#[tokio::test]
async fn a_cleanup_panic_does_not_stop_the_others_and_the_first_resumes() {
    let log = Log::default();
    let task_log = log.clone();
    let joined = tokio::spawn(async move {
        try_async_scope(async |s| {
            s.defer_async(task_log.later("first registered"));
            s.defer_async(async {
                tokio::task::yield_now().await;
                panic!("second cleanup")
            });
            let for_sync = task_log.clone();
            s.defer(move || for_sync.push("sync"));
            s.defer(|| panic!("last cleanup"));
            Ok::<_, io::Error>(())
        })
        .await
    })
    .await;
    let payload = joined.unwrap_err().into_panic();
    assert_eq!(panic_message(&*payload), "last cleanup");
    assert_eq!(log.all(), ["sync", "first registered"]);
}

#[tokio::test]
async fn the_body_error_is_primary_and_cleanup_errors_are_attached() {
    let result = try_async_scope(async |s| {
        s.defer_async_fallible(async { Err::<(), _>("registered first") });
        s.defer_async_fallible(async {
            tokio::task::yield_now().await;
            Err::<(), _>(io::Error::other("registered last"))
        });
        Err::<(), _>("body")
    })
    .await;
    let Err(ScopeError::Body {
        error,
        suppressed: Some(suppressed),
    }) = result
    else {
        panic!("expected a body error with suppressed cleanup errors: {result:?}");
    };
    let suppressed: Vec<String> = suppressed.iter().map(ToString::to_string).collect();
    assert_eq!(
        (error, suppressed),
        (
            "body",
            vec!["registered last".into(), "registered first".into()]
        )
    );
}

#[tokio::test]
async fn on_error_cleanups_follow_the_outcome_as_it_stands() {
    let log = Log::default();
    // Success: skipped, and its future dropped without being polled.
    try_async_scope(async |s| {
        s.defer_async_on_error(log.later("skipped"));
        Ok::<_, io::Error>(())
    })
    .await
    .unwrap();
    assert!(log.all().is_empty());
    // A cleanup that fails turns the outcome for the cleanups after it.
    let result = try_async_scope(async |s| {
        s.defer_async_on_error(log.later("after a failed cleanup"));
        s.defer_async_fallible(async { Err::<(), _>("flush failed") });
        Ok::<_, io::Error>(())
    })
    .await;
    assert!(matches!(result, Err(ScopeError::Cleanup(_))));
    assert_eq!(log.all(), ["after a failed cleanup"]);
}

#[tokio::test]
#[should_panic(expected = "and nothing could return the error")]
async fn async_scope_panics_for_an_error_nobody_can_return() {
    async_scope(async |s| s.defer_async_fallible(async { Err::<(), _>("lost?") })).await;
}

/// Go's `defer conn.Close()` in a server loop: every connection, on both ends, is held by a
/// scope whose cleanup shuts it down, and every peer sees the end of its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_shut_down_by_their_scopes() -> io::Result<()> {
    const CONNECTIONS: usize = 200;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..CONNECTIONS {
            let (stream, _) = listener.accept().await?;
            handlers.push(tokio::spawn(try_async_scope(async move |s| {
                let conn = s.hold_async_fallible(stream, |mut c| async move { c.shutdown().await });
                let mut request = Vec::new();
                // Ends at the client's shutdown: its scope has ended.
                conn.read_to_end(&mut request).await?;
                conn.write_all(&request).await?;
                Ok::<_, io::Error>(request.len())
            })));
        }
        let mut echoed = 0;
        for handler in handlers {
            echoed += handler.await.expect("no handler panics")?;
        }
        Ok::<_, io::Error>(echoed)
    });
    let replies = try_async_scope(async |s| {
        let mut conns = Vec::new();
        for i in 0..CONNECTIONS {
            let conn = s
                .hold_async_fallible(TcpStream::connect(address).await?, |mut c| async move {
                    c.shutdown().await
                });
            conn.write_all(format!("{i:03}").as_bytes()).await?;
            conns.push(conn);
        }
        // The write halves close only when this scope ends; the replies come after that.
        Ok::<_, io::Error>(conns.len())
    })
    .await?;
    assert_eq!(replies, CONNECTIONS);
    let echoed = server.await.expect("the server does not panic")?;
    assert_eq!(
        echoed,
        3 * CONNECTIONS,
        "every handler saw its client's end of stream"
    );
    Ok(())
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_sync_all_reaches_the_caller() {
    async fn write_to(path: &str) -> io::Result<usize> {
        let written = try_async_scope(async |s| {
            let file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
            let file = s.hold_async_fallible(file, |f| async move { f.sync_all().await });
            file.write_all(b"").await?;
            Ok::<_, io::Error>(0)
        })
        .await?;
        Ok(written)
    }
    // `/dev/full` takes no `fsync`: the only error is the cleanup's.
    let error = write_to("/dev/full").await.unwrap_err();
    let cleanup_errors = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<scoped_defer::CleanupErrors>())
        .expect("the cleanup's errors, kept inside the io::Error");
    let sync_error = cleanup_errors.first().downcast_ref::<io::Error>().unwrap();
    assert_eq!(
        sync_error.raw_os_error(),
        Some(22),
        "EINVAL from fsync: {error}"
    );
    assert_eq!(error.kind(), sync_error.kind());
    // The same scope with a file that syncs returns the body's value.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synced");
    std::fs::write(&path, "x").unwrap();
    assert_eq!(write_to(path.to_str().unwrap()).await.unwrap(), 0);
}

/// What the crate prints on standard error cannot be captured in-process, so these tests run
/// this binary again as a child, with `CHILD` naming the scenario, and read its stderr. The
/// child prints "site: LINE" for the line whose report it expects.
const CHILD: &str = "SCOPED_DEFER_STDERR_SCENARIO";

/// Runs `test` in a child process for `scenario`; returns its stderr and the site it names.
fn stderr_of(test: &str, scenario: &str) -> (String, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "the child failed: {stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("site: "))
        .expect("the child ran its scenario")
        .to_owned();
    (stderr.clone(), format!("tests/async_scope.rs:{line}:"))
}

/// Runs `test`'s child and checks that it reported a future dropped without being awaited,
/// naming the line that registered it.
fn assert_reported_unawaited(test: &str) {
    let (stderr, site) = stderr_of(test, "1");
    assert!(
        stderr.contains(&site) && stderr.contains("dropped without being awaited"),
        "no report naming {site}: {stderr}"
    );
}

/// A manual scope dropped before `finish`: its sync closures run at once, its futures are
/// dropped without being awaited, and each is reported with the line that registered it.
#[test]
fn a_dropped_scope_reports_the_futures_it_could_not_await() {
    if std::env::var_os(CHILD).is_some() {
        let log = Log::default();
        let scope = AsyncScope::new();
        eprintln!("site: {}", line!() + 1);
        scope.defer_async(log.later("never awaited"));
        let for_sync = log.clone();
        scope.defer(move || for_sync.push("ran at once"));
        drop(scope);
        assert_eq!(log.all(), ["ran at once"]);
        return;
    }
    assert_reported_unawaited("a_dropped_scope_reports_the_futures_it_could_not_await");
}

/// A body that panics keeps the cleanups' errors from being returned: they are reported.
#[test]
fn cleanup_errors_lost_to_a_body_panic_are_printed() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(try_async_scope(async |s| -> io::Result<()> {
                eprintln!("site: {}", line!() + 1);
                s.defer_async_fallible(async { Err::<(), _>("flush failed") });
                panic!("body failed")
            }))
        }));
        assert!(panicked.is_err());
        return;
    }
    let (stderr, site) = stderr_of("cleanup_errors_lost_to_a_body_panic_are_printed", "1");
    assert!(
        stderr.contains("nothing could return its error: flush failed") && stderr.contains(&site),
        "{stderr}"
    );
}

/// A cancelled scope's spawned task that the runtime drops before it runs (a shutdown)
/// reports the futures it never awaited.
#[cfg(feature = "tokio")]
#[test]
fn a_spawned_task_dropped_by_a_shutdown_reports_its_futures() {
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut scope = Box::pin(async_scope(async |s| {
                eprintln!("site: {}", line!() + 1);
                s.defer_async(async {});
                std::future::pending::<()>().await;
            }));
            let waker = std::task::Waker::noop();
            let polled = scope
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(polled.is_pending());
            drop(scope); // cancelled: the cleanup is spawned, not yet run
        });
        drop(runtime); // shut down before the spawned task ran
        return;
    }
    assert_reported_unawaited("a_spawned_task_dropped_by_a_shutdown_reports_its_futures");
}

#[test]
fn debug_names_the_type() {
    assert_eq!(format!("{:?}", AsyncScope::new()), "AsyncScope { .. }");
}

/// With the `tokio` feature, a cancelled `async_scope` spawns its pending futures: they
/// complete after the timeout, last first, and the sync closures ran at once.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_async_scope_spawns_its_pending_cleanups() {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let (sync_sender, in_body) = (sender.clone(), sender.clone());
    let timed_out = tokio::time::timeout(
        Duration::from_millis(50),
        async_scope(async |s| {
            let first = sender.clone();
            s.defer_async(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                first.send("async, registered first").unwrap();
            });
            s.defer(move || sync_sender.send("sync").unwrap());
            let second = s.hold_async(sender.clone(), |held| async move {
                tokio::task::yield_now().await;
                held.send("held, registered last").unwrap();
            });
            second.send("body").unwrap();
            std::future::pending::<()>().await;
        }),
    )
    .await;
    assert!(timed_out.is_err(), "the body never ends");
    drop((sender, in_body));
    let mut received = Vec::new();
    while let Some(message) = receiver.recv().await {
        received.push(message);
    }
    assert_eq!(
        received,
        [
            "body",
            "sync",
            "held, registered last",
            "async, registered first"
        ]
    );
}

/// Outside a tokio runtime (here, a scope's future dropped after a manual poll), nothing can
/// be spawned: the futures are dropped, not leaked.
#[test]
fn outside_a_runtime_pending_futures_are_dropped_not_leaked() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let token = Counted(Arc::clone(&drops));
    let mut scope = Box::pin(async_scope(async |s| {
        s.defer_async(async move {
            let _token = token;
        });
        std::future::pending::<()>().await;
    }));
    let waker = std::task::Waker::noop();
    let polled = scope
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert!(polled.is_pending());
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(scope);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
}
