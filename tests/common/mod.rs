//! Shared helpers: an event log that records when deferred closures run and when their
//! captures are dropped.
#![allow(dead_code, unreachable_pub)]

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

/// What happened to the token with a given id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Ran(u32),
    Dropped(u32),
}

/// A shared, ordered record of [`Event`]s.
#[derive(Clone, Default)]
pub struct Events(Rc<RefCell<Vec<Event>>>);

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    /// A capture that records `Dropped(id)` when it is dropped.
    pub fn token(&self, id: u32) -> Token {
        Token {
            id,
            events: self.clone(),
        }
    }

    pub fn push(&self, event: Event) {
        self.0.borrow_mut().push(event);
    }

    pub fn all(&self) -> Vec<Event> {
        self.0.borrow().clone()
    }

    /// The ids of the tokens that ran, in order.
    pub fn ran(&self) -> Vec<u32> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Event::Ran(id) => Some(id),
                Event::Dropped(_) => None,
            })
            .collect()
    }

    /// The ids of the tokens that were dropped, in order.
    pub fn dropped(&self) -> Vec<u32> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Event::Dropped(id) => Some(id),
                Event::Ran(_) => None,
            })
            .collect()
    }

    /// Asserts that every id in `ids` was dropped exactly once and no other id was.
    pub fn assert_each_dropped_once(&self, ids: impl IntoIterator<Item = u32>) {
        let mut expected: Vec<u32> = ids.into_iter().collect();
        expected.sort_unstable();
        let mut dropped = self.dropped();
        dropped.sort_unstable();
        assert_eq!(dropped, expected, "every capture dropped exactly once");
    }
}

/// A value captured by a deferred closure.
pub struct Token {
    pub id: u32,
    events: Events,
}

impl Token {
    /// Records `Ran(id)`; call it from the closure body.
    pub fn ran(&self) {
        self.events.push(Event::Ran(self.id));
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.events.push(Event::Dropped(self.id));
    }
}

/// A token padded to 64 bytes: too large for an inline slot.
pub struct LargeToken {
    pub token: Token,
    pub padding: [u64; 7],
}

/// A token aligned to 64 bytes: over-aligned for an inline slot.
#[repr(align(64))]
pub struct AlignedToken(pub Token);

/// Runs `f`, returning the panic payload's message if it panicked.
pub fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = catch_expected(f).err()?;
    Some(
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string payload>".to_string()),
    )
}

thread_local! {
    static EXPECTING_PANICS: Cell<usize> = const { Cell::new(0) };
    static LAST_PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Where the last panic on this thread was raised (`file:line`), as the hook saw it; needs
/// [`quiet_panics`].
pub fn last_panic_location() -> Option<String> {
    LAST_PANIC_AT.with(|at| at.borrow().clone())
}

/// `catch_unwind` for panics a test provokes on purpose: with [`quiet_panics`] installed,
/// they are not printed, while a failing assertion elsewhere still is.
pub fn catch_expected<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    EXPECTING_PANICS.with(|n| n.set(n.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANICS.with(|n| n.set(n.get() - 1));
    result
}

/// Installs a panic hook that stays silent inside [`catch_expected`].
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            LAST_PANIC_AT.with(|last| *last.borrow_mut() = at);
            if EXPECTING_PANICS.with(Cell::get) == 0 {
                default(info);
            }
        }));
    });
}

/// Scales an iteration count down under Miri, which is ~1000x slower, without skipping the
/// code path.
pub const fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        if n > 1000 { 1000 } else { n }
    } else {
        n
    }
}

/// The variable that tells a test binary run by [`in_child`] that it is the child.
const CHILD: &str = "SCOPED_DEFER_CHILD_SCENARIO";

/// Runs `scenario` in a child process (this test binary again, running only `test`), and
/// fails if the child does not exit successfully: for what used to abort the process, which
/// would otherwise take the whole test binary down. Under Miri, which cannot start processes,
/// the scenario runs in place (an abort there fails the run too).
pub fn in_child(test: &str, scenario: impl FnOnce()) {
    if cfg!(miri) || std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child running {test} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child did not run {test}: {stdout}"
    );
}

/// Polls `future` to completion on this thread, parking between polls: an executor for tests
/// that need no runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // A timeout, for futures that return `Pending` without waking: they are polled again.
        std::thread::park_timeout(std::time::Duration::from_millis(1));
    }
}

/// A log of strings shared with `'static`, `Send` cleanups (async ones among them).
#[derive(Clone, Default)]
pub struct SharedLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl SharedLog {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// A future that logs `entry` after suspending once, so that it really is awaited.
    pub fn later(&self, entry: &'static str) -> impl Future<Output = ()> + Send + 'static {
        let log = self.clone();
        async move {
            YieldOnce(false).await;
            log.push(entry);
        }
    }

    /// A closure that logs `entry`.
    pub fn now(&self, entry: &'static str) -> impl FnOnce() + Send + 'static {
        let log = self.clone();
        move || log.push(entry)
    }
}

/// Pending once (after waking its task), then ready: an `.await` that really suspends, on
/// any executor.
pub struct YieldOnce(pub bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A cleanup's error whose drop panics, counting its drops in the given counter: once handed
/// to the crate, it is the crate that drops it when nothing can return it.
#[derive(Debug)]
pub struct DropPanics(pub &'static std::sync::atomic::AtomicUsize);

impl std::fmt::Display for DropPanics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("close failed")
    }
}

impl std::error::Error for DropPanics {}

impl Drop for DropPanics {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("the error's drop panicked");
    }
}
