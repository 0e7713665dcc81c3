//! Go's `defer conn.Close()` in an async server loop, on tokio.
//!
//! ```go
//! for {
//!     conn, _ := ln.Accept()
//!     go func() {
//!         defer conn.Close()
//!         handle(conn)
//!     }()
//! }
//! ```
//!
//! Here every connection, on both ends, is held by an `async_scope` whose cleanup awaits its
//! `shutdown()`. Some clients give up mid-request (a timeout drops their future): their
//! scopes are cancelled, and with the `tokio` feature the pending shutdowns are spawned rather
//! than lost, so the server still sees every connection end.
//!
//! Usage: `cargo run --example async_cleanup --features tokio`. Exits non-zero if a
//! connection is left open on either side.

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scoped_defer::try_async_scope;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const PATIENT: usize = 200;
const IMPATIENT: usize = 20;
/// How long an impatient client waits for a reply that never comes.
const TIMEOUT: Duration = Duration::from_millis(50);

/// Connections accepted and not yet shut down, on each side.
static SERVER_OPEN: AtomicUsize = AtomicUsize::new(0);
static CLIENT_OPEN: AtomicUsize = AtomicUsize::new(0);

/// One connection on the server: read a line, answer it. The cleanup is registered where the
/// connection is accepted, as in Go, and runs however `handle` ends.
async fn handle(stream: TcpStream) -> io::Result<()> {
    SERVER_OPEN.fetch_add(1, Ordering::SeqCst);
    try_async_scope(async |s| {
        let conn = s.hold_async_fallible(BufReader::new(stream), |mut conn| async move {
            let closed = conn.shutdown().await;
            SERVER_OPEN.fetch_sub(1, Ordering::SeqCst);
            closed
        });
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(()); // the client left before asking
        }
        conn.write_all(format!("pong {line}").as_bytes()).await
    })
    .await?;
    Ok(())
}

/// One client's request on its connection; an impatient client never finishes its request,
/// and is cancelled by a timeout.
async fn request(stream: TcpStream, i: usize, patient: bool) -> io::Result<String> {
    CLIENT_OPEN.fetch_add(1, Ordering::SeqCst);
    let reply = try_async_scope(async |s| {
        let conn = s.hold_async_fallible(BufReader::new(stream), |mut conn| async move {
            let closed = conn.shutdown().await;
            CLIENT_OPEN.fetch_sub(1, Ordering::SeqCst);
            closed
        });
        if patient {
            conn.write_all(format!("ping {i}\n").as_bytes()).await?;
        } else {
            // Half a request: the server waits for the rest, and so does this client.
            conn.write_all(b"ping").await?;
        }
        let mut reply = String::new();
        conn.read_line(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    })
    .await?;
    Ok(reply)
}

/// Waits, a bounded time, for both sides' counts of open connections to reach zero.
async fn open_after_settling() -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = (
            SERVER_OPEN.load(Ordering::SeqCst),
            CLIENT_OPEN.load(Ordering::SeqCst),
        );
        if open == (0, 0) || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() -> io::Result<ExitCode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..PATIENT + IMPATIENT {
            let (stream, _) = listener.accept().await?;
            handlers.push(tokio::spawn(handle(stream)));
        }
        for handler in handlers {
            // A cancelled client's connection may end in an error; it still ends.
            let _ = handler.await?;
        }
        Ok::<_, io::Error>(())
    });

    let mut clients = Vec::new();
    for i in 0..PATIENT + IMPATIENT {
        let patient = i % ((PATIENT + IMPATIENT) / IMPATIENT) != 0;
        clients.push(tokio::spawn(async move {
            // Connected before any timeout, so that the server sees every client.
            let stream = TcpStream::connect(address).await?;
            if patient {
                request(stream, i, true).await.map(Some)
            } else {
                let cancelled = tokio::time::timeout(TIMEOUT, request(stream, i, false)).await;
                assert!(cancelled.is_err(), "an impatient client never gets a reply");
                Ok(None)
            }
        }));
    }
    let (mut answered, mut cancelled) = (0, 0);
    for client in clients {
        match client.await?? {
            Some(reply) if reply.starts_with("pong ping") => answered += 1,
            Some(reply) => panic!("unexpected reply {reply:?}"),
            None => cancelled += 1,
        }
    }
    server.await??;
    let (server_open, client_open) = open_after_settling().await;

    println!(
        "{answered} requests answered, {cancelled} clients cancelled by a timeout mid-request"
    );
    println!("connections left open: {server_open} on the server, {client_open} on the clients");
    if (answered, cancelled) != (PATIENT, IMPATIENT) || (server_open, client_open) != (0, 0) {
        eprintln!("FAILED: every connection should have been shut down by its scope");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "every connection was shut down by its scope; the cancelled clients' shutdowns ran on a \
         task spawned when their scopes were dropped"
    );
    Ok(ExitCode::SUCCESS)
}
