//! Go's `errgroup` with `SetLimit`, for fetching: many requests, at most a few connections
//! open at once, each connection shut down by its own `defer`, the first failure stopping the
//! rest.
//!
//! ```go
//! g, ctx := errgroup.WithContext(ctx)
//! g.SetLimit(8)
//! for _, path := range paths {
//!     g.Go(func() error {
//!         conn, err := dial(ctx)
//!         if err != nil { return err }
//!         defer conn.Close()
//!         return fetch(ctx, conn, path)
//!     })
//! }
//! err := g.Wait()
//! ```
//!
//! Here each request is an item of `try_for_each_concurrent_scoped`, with an `AsyncScope` that
//! holds its connection and awaits its `shutdown()`. A first pass fetches every page; a second
//! asks for a missing one among them: the loop stops starting requests, cancels those in
//! flight, and still awaits the shutdown of every connection it opened before returning.
//!
//! Usage: `cargo run --example concurrent_fetch --features tokio`. Exits non-zero if a
//! connection is left open, if more than the limit were open at once, or if a request started
//! after the failure.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use scoped_defer::try_for_each_concurrent_scoped;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const PAGES: usize = 300;
const LIMIT: usize = 8;

/// Serves `/page/N` with N's text, and says `missing` for anything else.
async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut request = String::new();
            if BufReader::new(read).read_line(&mut request).await.is_err() {
                return;
            }
            let reply = match request.trim().strip_prefix("/page/") {
                Some(n) => format!("page {n}"),
                None => String::from("missing"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
}

/// What the fetches count.
#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    peak: AtomicUsize,
    opened: AtomicUsize,
    shut_down: AtomicUsize,
    failed: AtomicBool,
    started_after_failure: AtomicUsize,
}

/// Fetches `path` on a connection of its own, held by the item's scope, which shuts it down.
async fn fetch(
    s: &scoped_defer::AsyncScope,
    counts: &Arc<Counts>,
    address: std::net::SocketAddr,
    path: &str,
) -> io::Result<String> {
    if counts.failed.load(Ordering::SeqCst) {
        counts.started_after_failure.fetch_add(1, Ordering::SeqCst);
    }
    let stream = TcpStream::connect(address).await?;
    counts.opened.fetch_add(1, Ordering::SeqCst);
    let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
    counts.peak.fetch_max(open, Ordering::SeqCst);
    let closing = Arc::clone(counts);
    // Go: defer conn.Close()
    let conn = s.hold_async_fallible(stream, move |mut conn| async move {
        let shut_down = conn.shutdown().await;
        closing.open.fetch_sub(1, Ordering::SeqCst);
        closing.shut_down.fetch_add(1, Ordering::SeqCst);
        shut_down
    });
    conn.write_all(format!("{path}\n").as_bytes()).await?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    if reply == "missing" {
        counts.failed.store(true, Ordering::SeqCst);
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{path}: missing"),
        ));
    }
    Ok(reply)
}

/// Fetches every path, at most `LIMIT` at once; the pages fetched, and how it ended.
async fn fetch_all(
    address: std::net::SocketAddr,
    paths: &[String],
    counts: &Arc<Counts>,
) -> (Vec<String>, io::Result<()>) {
    let pages = Mutex::new(Vec::new());
    let result = try_for_each_concurrent_scoped(paths, LIMIT, async |s, path| {
        let page = fetch(s, counts, address, path).await?;
        pages.lock().unwrap().push(page);
        Ok::<(), io::Error>(())
    })
    .await;
    // `?` would convert the `ScopeError` into an `io::Error` that keeps the cleanup errors.
    (pages.into_inner().unwrap(), result.map_err(io::Error::from))
}

fn check(what: &str, holds: bool, failures: &mut usize) {
    println!("{} {what}", if holds { "ok:    " } else { "FAILED:" });
    *failures += usize::from(!holds);
}

#[tokio::main]
async fn main() -> io::Result<ExitCode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener));
    let mut failures = 0;

    let paths: Vec<String> = (0..PAGES).map(|n| format!("/page/{n}")).collect();
    let counts = Arc::new(Counts::default());
    let (pages, result) = fetch_all(address, &paths, &counts).await;
    println!(
        "first pass: {} pages, at most {} connections open at once",
        pages.len(),
        counts.peak.load(Ordering::SeqCst)
    );
    check(
        "every page fetched",
        result.is_ok() && pages.len() == PAGES,
        &mut failures,
    );
    check(
        "at most LIMIT connections open at once",
        counts.peak.load(Ordering::SeqCst) <= LIMIT,
        &mut failures,
    );
    check(
        "every connection shut down before the loop returned",
        counts.shut_down.load(Ordering::SeqCst) == PAGES,
        &mut failures,
    );

    let mut paths = paths;
    paths[100] = String::from("/nowhere");
    let counts = Arc::new(Counts::default());
    let (pages, result) = fetch_all(address, &paths, &counts).await;
    let opened = counts.opened.load(Ordering::SeqCst);
    println!(
        "second pass: {result:?} after {} pages; {opened} connections opened",
        pages.len()
    );
    check(
        "the missing page is the error",
        result
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound),
        &mut failures,
    );
    check(
        "no request started after the failure",
        counts.started_after_failure.load(Ordering::SeqCst) == 0,
        &mut failures,
    );
    check("the loop stopped early", opened < PAGES, &mut failures);
    check(
        "every connection opened was shut down before the loop returned",
        counts.shut_down.load(Ordering::SeqCst) == opened
            && counts.open.load(Ordering::SeqCst) == 0,
        &mut failures,
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
