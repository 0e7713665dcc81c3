//! [`AsyncScope`]: cleanups that are awaited, last registered first, on every exit.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::{Future, poll_fn};
use core::marker::PhantomData;
use core::panic::Location;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::arena::{Arena, Claim, EntryEnd, Payload, Step, Stored, drop_payload, drop_quietly};
use crate::bounds::{CleanupError, CleanupOutput};
use crate::deferred::{
    Call, CleanupFuture, Deferred, DrainContext, Held, OnFailure, OnSuccess, Outcome, Plain,
    Started,
};
use crate::ending::{combine, unreported};
use crate::entry::{self, Entry};
use crate::error::{BoxError, CleanupErrors, ScopeError};
use crate::report::{self, ReportKind};
use crate::scope::consumed_as;
use crate::stats::Consumed;
use crate::stats::Stats;
use crate::tracking::{self, Tracking};

/// Sync closures stored inline before the scope allocates.
const INLINE: usize = 8;

/// A LIFO stack of cleanups, sync and async, that are run or awaited one at a time, last
/// registered first, when the scope ends: Python's `AsyncExitStack`, Go's `defer` for async
/// code.
///
/// The usual way in is [`async_scope`] or [`try_async_scope`], which await the cleanups
/// whether the body returns or panics; a scope made with [`AsyncScope::new`] ends with
/// [`finish`](AsyncScope::finish).
///
/// Cleanups are `'static`: they own what they clean up (a connection, an `Arc`), as a
/// spawned task does. That is what lets the future of [`async_scope`] be `Send`, so that it
/// can be `tokio::spawn`ed (rustc cannot prove it for a scope type with a lifetime
/// parameter), and what lets a cancelled scope hand its cleanups to the runtime rather than
/// drop them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// # if cfg!(miri) { return Ok(()); } // Miri runs without sockets
/// use scoped_defer::try_async_scope;
/// use tokio::io::AsyncWriteExt;
/// use tokio::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let address = listener.local_addr()?;
/// let written = try_async_scope(async |s| {
///     // Go: conn, _ := net.Dial(...); defer conn.Close()
///     let conn = s.hold_async_fallible(TcpStream::connect(address).await?, |mut conn| async move {
///         conn.shutdown().await
///     });
///     conn.write_all(b"hello").await?;
///     Ok::<_, std::io::Error>(5)
/// })
/// .await?;
/// assert_eq!(written, 5);
/// # Ok(())
/// # }
/// ```
///
/// # Costs
///
/// Registering a sync closure allocates nothing, as in a [`Scope`](crate::Scope). Each async
/// cleanup's future is boxed once; a held value with its cleanup is stored inline if it fits
/// two words (the third keeps the line that registered it; boxed once otherwise), and its
/// future is boxed when the scope ends.
/// Registration takes an atomic flag, which makes the scope `Sync`: the body of
/// [`async_scope`] holds `&AsyncScope` across `.await`, and its future must be `Send` for
/// `tokio::spawn`.
///
/// # Cancellation
///
/// A future that is dropped before it completes (by `select!`, a timeout, an aborted task)
/// cannot await anything. When a scope is dropped with cleanups still pending:
///
/// | pending cleanup | with the `tokio` feature, inside a tokio runtime | otherwise |
/// |---|---|---|
/// | sync closure ([`defer`](AsyncScope::defer)) | runs at once, in order | runs at once, in order |
/// | async cleanup, including the one being awaited | spawned with the others as one task that awaits them last first; its errors and panics are [reported](crate::report), and so are the futures a runtime shutdown keeps it from finishing | dropped without being awaited, and [reported](crate::report) with the line that registered it (naming the `tokio` feature if it is missing) |
///
/// A cancelled scope counts as failed: [`defer_async_on_error`](AsyncScope::defer_async_on_error)
/// cleanups are among those run or spawned.
///
/// # Limits and stats
///
/// As for a [`Scope`](crate::Scope): [`with_limit`](AsyncScope::with_limit) or
/// [`set_limit`](AsyncScope::set_limit) caps the pending cleanups, with the same panic naming
/// the line that piles up, and [`with_stats`](AsyncScope::with_stats) or
/// [`track_stats`](AsyncScope::track_stats) makes [`stats`](AsyncScope::stats) available.
/// They are set on a scope of your own, before the body lends it out:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let scope = scoped_defer::AsyncScope::with_limit(2);
/// scope.defer_async(async {});
/// scope.defer(|| ());
/// let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scope.defer(|| ())));
/// assert!(refused.is_err());
/// scope.finish().await.unwrap();
/// # }
/// ```
///
/// # Panics and errors
///
/// A cleanup that panics does not stop the others; the first panic resumes once all have
/// ended. Errors follow [`try_scope`](crate::try_scope)'s rules: the body's error is primary,
/// the cleanups' are attached to it.
///
/// A cleanup that is not `Send` is refused:
///
/// ```compile_fail
/// let scope = scoped_defer::AsyncScope::new();
/// let not_send = std::rc::Rc::new(());
/// scope.defer_async(async move { drop(not_send) });
/// ```
pub struct AsyncScope {
    /// Sync closures and async cleanups alike, in registration order. Invariant: holds only
    /// `Send` closures and values.
    arena: Arena<'static, INLINE, Tracking>,
    /// Set while a registration uses the arena: see the `Sync` impl.
    busy: AtomicBool,
    /// The cleanup being awaited, kept here so that a cancelled drain still sees it.
    in_flight: Option<Started<'static>>,
}

static_assertions::assert_impl_all!(AsyncScope: Send, Sync);

impl Default for AsyncScope {
    fn default() -> Self {
        AsyncScope {
            arena: Arena::new(),
            busy: AtomicBool::new(false),
            in_flight: None,
        }
    }
}

impl AsyncScope {
    /// Creates an empty scope, to end with [`finish`](AsyncScope::finish). Allocates nothing.
    /// Dropped without `finish`, it is cancelled (see [Cancellation](#cancellation)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::{Arc, Mutex};
    ///
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let scope = scoped_defer::AsyncScope::new();
    /// let for_async = Arc::clone(&log);
    /// scope.defer_async(async move { for_async.lock().unwrap().push("awaited") });
    /// let for_sync = Arc::clone(&log);
    /// scope.defer(move || for_sync.lock().unwrap().push("ran"));
    /// scope.finish().await.unwrap();
    /// assert_eq!(*log.lock().unwrap(), ["ran", "awaited"]);
    /// # }
    /// ```
    ///
    /// A cleanup that borrows is refused:
    ///
    /// ```compile_fail,E0373
    /// # async fn f() {
    /// let local = String::from("local");
    /// let scope = scoped_defer::AsyncScope::new();
    /// scope.defer(|| println!("{local}"));
    /// # }
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a scope that holds at most `limit` pending cleanups: past it, every
    /// registration panics, naming the line that piles up. See
    /// [`Scope::with_limit`](crate::Scope::with_limit).
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_limit(limit: usize) -> Self {
        let mut scope = Self::new();
        scope.set_limit(limit);
        scope
    }

    /// Creates a scope that tracks [`stats`](AsyncScope::stats). See
    /// [`Scope::with_stats`](crate::Scope::with_stats).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let scope = scoped_defer::AsyncScope::with_stats();
    /// for _ in 0..3 {
    ///     scope.defer_async(async {});
    /// }
    /// assert_eq!(scope.stats().unwrap().sites()[0].pending, 3);
    /// scope.finish().await.unwrap();
    /// # }
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_stats() -> Self {
        let mut scope = Self::new();
        scope.track_stats();
        scope
    }

    /// Caps the pending cleanups at `limit`, from now on. See
    /// [`Scope::set_limit`](crate::Scope::set_limit).
    #[track_caller]
    pub fn set_limit(&mut self, limit: usize) {
        tracking::set_limit(&mut self.arena, limit, Location::caller());
    }

    /// Starts tracking [`stats`](AsyncScope::stats), counting from the cleanups pending now.
    /// They describe the scope while it lives, which [`finish`](AsyncScope::finish) ends:
    /// what is pending, from which lines, the high-water mark and the refused cleanups.
    #[track_caller]
    pub fn track_stats(&mut self) {
        tracking::track_stats(&mut self.arena, Location::caller());
    }

    /// The limit, if any.
    #[must_use]
    pub fn limit(&self) -> Option<usize> {
        self.exclusively(|arena| tracking::limit(arena))
    }

    /// The number of pending cleanups, sync and async.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer), if another thread registers at the same moment.
    #[must_use]
    pub fn len(&self) -> usize {
        self.exclusively(|arena| arena.len())
    }

    /// Whether no cleanup is pending.
    ///
    /// # Panics
    ///
    /// As [`len`](AsyncScope::len).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the scope has been used so far, if it tracks stats; see [`Stats`].
    #[must_use]
    pub fn stats(&self) -> Option<Stats> {
        self.exclusively(|arena| tracking::stats(arena))
    }

    /// Runs `f` on the arena while holding the busy flag, which makes the access exclusive
    /// (see the `Sync` impl); panics if another thread holds it.
    #[inline(always)]
    #[track_caller]
    fn exclusively<'a, R>(
        &'a self,
        f: impl FnOnce(&'a Arena<'static, INLINE, Tracking>) -> R,
    ) -> R {
        if self.busy.swap(true, Ordering::Acquire) {
            concurrent_registration();
        }
        let _release = scopeguard::guard(&self.busy, |busy| busy.store(false, Ordering::Release));
        f(&self.arena)
    }

    /// Registers a sync closure, run in its turn. Allocates nothing for the first 8.
    ///
    /// # Panics
    ///
    /// If another thread registers on the same scope at the same moment.
    #[track_caller]
    pub fn defer<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'static,
        R: CleanupOutput,
    {
        self.push(Plain(f));
    }

    /// Registers a future, awaited in its turn. Boxed once.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    #[inline]
    #[track_caller]
    pub fn defer_async<F>(&self, cleanup: F)
    where
        F: Future<Output: CleanupOutput> + Send + 'static,
    {
        self.push_future::<_, ALWAYS>(cleanup);
    }

    /// Registers a future that can fail, awaited in its turn; its error is returned by
    /// [`finish`](AsyncScope::finish) or [`try_async_scope`], attached to the body's error if
    /// there is one. Boxed once.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use scoped_defer::{ScopeError, try_async_scope};
    ///
    /// let result = try_async_scope(async |s| {
    ///     s.defer_async_fallible(async { Err::<(), _>("flush failed") });
    ///     Err::<(), _>("write failed")
    /// })
    /// .await;
    /// let Err(ScopeError::Body { error, suppressed: Some(suppressed) }) = result else {
    ///     panic!("expected both errors");
    /// };
    /// assert_eq!((error, suppressed.first().to_string()), ("write failed", "flush failed".into()));
    /// # }
    /// ```
    #[track_caller]
    pub fn defer_async_fallible<F, E>(&self, cleanup: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: CleanupError + 'static,
    {
        self.push_future::<_, ALWAYS>(cleanup);
    }

    /// Registers a future awaited only if the scope fails: the body returned `Err` or
    /// panicked, an earlier cleanup failed, or the scope was cancelled. Zig's `errdefer`, for
    /// async rollbacks. Boxed once.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// static ROLLED_BACK: AtomicBool = AtomicBool::new(false);
    /// let result = scoped_defer::try_async_scope(async |s| {
    ///     s.defer_async_on_error(async { ROLLED_BACK.store(true, Ordering::Relaxed) });
    ///     Err::<(), _>("step two failed")
    /// })
    /// .await;
    /// assert!(result.is_err() && ROLLED_BACK.load(Ordering::Relaxed));
    /// # }
    /// ```
    #[track_caller]
    pub fn defer_async_on_error<F>(&self, cleanup: F)
    where
        F: Future<Output: CleanupOutput> + Send + 'static,
    {
        self.push_future::<_, ON_FAILURE>(cleanup);
    }

    /// Registers a future awaited only if the scope succeeds: the body returned (or returned
    /// `Ok`), and no cleanup before this one failed or panicked; never for a cancelled scope.
    /// Boxed once.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// static COMMITTED: AtomicUsize = AtomicUsize::new(0);
    /// for fails in [false, true] {
    ///     let _ = scoped_defer::try_async_scope(async |s| {
    ///         s.defer_async_on_success(async { COMMITTED.fetch_add(1, Ordering::Relaxed); });
    ///         if fails { Err("step two failed") } else { Ok(()) }
    ///     })
    ///     .await;
    /// }
    /// assert_eq!(COMMITTED.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    #[track_caller]
    pub fn defer_async_on_success<F>(&self, cleanup: F)
    where
        F: Future<Output: CleanupOutput> + Send + 'static,
    {
        self.push_future::<_, ON_SUCCESS>(cleanup);
    }

    /// Registers a sync closure run in its turn only if the scope fails, as
    /// [`defer_async_on_error`](AsyncScope::defer_async_on_error) does for a future, and
    /// [`Scope::defer_on_error`](crate::Scope::defer_on_error) in a sync scope.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    #[track_caller]
    pub fn defer_on_error<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'static,
        R: CleanupOutput,
    {
        self.push(OnFailure(f));
    }

    /// Registers a sync closure run in its turn only if the scope succeeds, as
    /// [`defer_async_on_success`](AsyncScope::defer_async_on_success) does for a future.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::{Arc, Mutex};
    ///
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let result = scoped_defer::try_async_scope(async |s| {
    ///     let (on_error, on_success) = (log.clone(), log.clone());
    ///     s.defer_on_error(move || on_error.lock().unwrap().push("rolled back"));
    ///     s.defer_on_success(move || on_success.lock().unwrap().push("committed"));
    ///     Err::<(), _>("failed")
    /// })
    /// .await;
    /// assert!(result.is_err());
    /// assert_eq!(*log.lock().unwrap(), ["rolled back"]);
    /// # }
    /// ```
    #[track_caller]
    pub fn defer_on_success<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'static,
        R: CleanupOutput,
    {
        self.push(OnSuccess(f));
    }

    /// Like [`defer`](AsyncScope::defer), and returns a handle to this one closure, which can
    /// [cancel](Entry::cancel) it or [run it now](Entry::run_now); see
    /// [`Scope::defer_entry`](crate::Scope::defer_entry). The handle is `Send`, so it can be
    /// kept across `.await` in a spawned task.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    #[track_caller]
    pub fn defer_entry<F, R>(&self, f: F) -> Entry<'_, Self>
    where
        F: FnOnce() -> R + Send + 'static,
        R: CleanupOutput,
    {
        let (_, claim) = self.push(Plain(f)).into_entry();
        Entry::new(self, claim, Self::consume_entry)
    }

    /// Like [`hold_async`](AsyncScope::hold_async), and returns a handle to this one entry,
    /// which derefs to the value: [`Held::release`](crate::Held::release) gives the value
    /// back and its cleanup never runs; [`Held::run_now_async`](crate::Held::run_now_async)
    /// awaits the cleanup now. Dropping the handle leaves the cleanup registered.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use scoped_defer::{Held, try_async_scope};
    /// use tokio::sync::mpsc;
    ///
    /// let (log, mut read) = mpsc::unbounded_channel();
    /// let kept = try_async_scope(async |s| {
    ///     let lease = s.hold_async_entry(String::from("lease 7"), move |lease| async move {
    ///         log.send(format!("returned {lease}")).unwrap();
    ///     });
    ///     // ... the lease is now the caller's to return
    ///     Ok::<_, std::io::Error>(Held::release(lease))
    /// })
    /// .await
    /// .unwrap();
    /// assert_eq!(kept, "lease 7");
    /// assert!(read.try_recv().is_err(), "nothing returned it");
    /// # }
    /// ```
    #[track_caller]
    pub fn hold_async_entry<T, C, F>(&self, value: T, cleanup: C) -> crate::Held<'_, T, Self>
    where
        T: Send + 'static,
        C: FnOnce(T) -> F + Send + 'static,
        F: Future<Output: CleanupOutput> + Send + 'static,
    {
        let (stored, claim) = self
            .push(HeldAsync {
                held: Held {
                    value: Some(value),
                    cleanup: move |value: Option<T>| {
                        let future = value.map(cleanup);
                        async move {
                            if let Some(future) = future {
                                future.await;
                            }
                        }
                    },
                },
                site: Location::caller(),
                future: PhantomData,
            })
            .into_entry();
        crate::Held::new(
            stored.project(|stored| &mut stored.held.value),
            self,
            claim,
            Self::consume_entry,
        )
    }

    /// Consumes one entry early, as `end` says, after counting it; the closure runs once the
    /// busy flag is released, so that it may use the scope.
    fn consume_entry(&self, claim: Claim<'_>, end: EntryEnd, leaving: &mut dyn FnMut()) {
        let taken = self.exclusively(|arena| {
            tracking::count_entry(arena, arena.line_of(&claim), consumed_as(end));
            leaving();
            arena.take_entry(claim)
        });
        match end {
            EntryEnd::Discard => entry::consume_taken(taken, end),
            // A sync closure runs; an async cleanup, which nothing here can await, is handed
            // over as a cancelled scope's are.
            EntryEnd::Run => entry::caught_while_unwinding(move || {
                if let Some(started) = taken.start(&mut DrainContext::new(Outcome::Success)) {
                    detach(None, alloc::vec![started]);
                }
            }),
        }
    }

    /// Drops every pending cleanup without running or awaiting it (captures and futures are
    /// dropped, last registered first); a panic while dropping does not stop the rest, and the
    /// first resumes afterwards. Python's `AsyncExitStack` has no such method: its
    /// `pop_all()` is [`take`](AsyncScope::take).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// static RAN: AtomicBool = AtomicBool::new(false);
    /// let mut scope = scoped_defer::AsyncScope::new();
    /// scope.defer_async(async { RAN.store(true, Ordering::Relaxed) });
    /// scope.dismiss();
    /// scope.finish().await.unwrap();
    /// assert!(!RAN.load(Ordering::Relaxed));
    /// # }
    /// ```
    pub fn dismiss(&mut self) {
        tracking::count_consumed(&mut self.arena, Consumed::Dismissed);
        self.arena.discard_all();
    }

    /// Moves every pending cleanup into a new scope and leaves this one empty: Python's
    /// `AsyncExitStack.pop_all()`. Build something step by step with cleanups that undo each
    /// step, and on success hand them to the caller. The limit and stats stay with this scope,
    /// as for [`Scope::take`](crate::Scope::take).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// static CLOSED: AtomicUsize = AtomicUsize::new(0);
    /// let mut setup = scoped_defer::AsyncScope::new();
    /// setup.defer_async(async { CLOSED.fetch_add(1, Ordering::Relaxed); });
    /// let handed_over = setup.take(); // success: the caller owns the connection now
    /// setup.finish().await.unwrap();
    /// assert_eq!(CLOSED.load(Ordering::Relaxed), 0);
    /// handed_over.finish().await.unwrap();
    /// assert_eq!(CLOSED.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    #[must_use = "dropping the taken scope cancels its cleanups"]
    pub fn take(&mut self) -> Self {
        tracking::count_consumed(&mut self.arena, Consumed::Taken);
        let taken = AsyncScope {
            arena: self.arena.take(),
            busy: AtomicBool::new(false),
            in_flight: None,
        };
        tracking::keep_tracking(&mut self.arena);
        taken
    }

    /// Moves `value` into the scope and lends it back; when the scope ends, `cleanup` gets it
    /// back by value and its future is awaited in turn. Go's `conn := dial(); defer
    /// conn.Close()`, where `conn` stays usable. Nothing is allocated until the scope ends if
    /// `value` and `cleanup` fit two words (the slot's third keeps the line that registered
    /// them); the future is boxed then.
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tokio::sync::mpsc;
    ///
    /// let (sender, mut receiver) = mpsc::channel(1);
    /// scoped_defer::async_scope(async |s| {
    ///     let sender = s.hold_async(sender, |sender| async move {
    ///         sender.send("closing").await.unwrap();
    ///     });
    ///     sender.send("working").await.unwrap();
    ///     assert_eq!(receiver.recv().await, Some("working"));
    /// })
    /// .await;
    /// assert_eq!(receiver.recv().await, Some("closing"));
    /// # }
    /// ```
    ///
    /// The borrow ends before the scope does:
    ///
    /// ```compile_fail,E0505
    /// # async fn f() {
    /// let scope = scoped_defer::AsyncScope::new();
    /// let held = scope.hold_async(String::from("held"), |_| async {});
    /// let _ = scope.finish().await;
    /// held.push('!');
    /// # }
    /// ```
    #[allow(clippy::mut_from_ref)] // each call lends a different slot, which never moves
    #[track_caller]
    pub fn hold_async<T, C, F>(&self, value: T, cleanup: C) -> &mut T
    where
        T: Send + 'static,
        C: FnOnce(T) -> F + Send + 'static,
        F: Future<Output: CleanupOutput> + Send + 'static,
    {
        self.hold_with(value, cleanup)
    }

    /// Like [`hold_async`](AsyncScope::hold_async), for a cleanup that can fail: its error is
    /// kept like that of [`defer_async_fallible`](AsyncScope::defer_async_fallible).
    ///
    /// # Panics
    ///
    /// As [`defer`](AsyncScope::defer).
    #[allow(clippy::mut_from_ref)] // as in `hold_async`
    #[track_caller]
    pub fn hold_async_fallible<T, C, F, E>(&self, value: T, cleanup: C) -> &mut T
    where
        T: Send + 'static,
        C: FnOnce(T) -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: CleanupError + 'static,
    {
        self.hold_with(value, cleanup)
    }

    /// Awaits every cleanup, last registered first, as for a body that succeeded, and returns
    /// the errors of those that failed. If the returned future is dropped first, the rest are
    /// handled as for a cancelled scope.
    ///
    /// # Errors
    ///
    /// The errors of the fallible cleanups, in the order they happened.
    ///
    /// # Panics
    ///
    /// With the first panic of a cleanup, once every other cleanup has ended (their errors are
    /// then [reported](crate::report)).
    pub async fn finish(mut self) -> Result<(), CleanupErrors> {
        let drained = self.drain(Outcome::Success).await;
        drained.into_result()
    }

    #[inline(always)]
    #[track_caller]
    fn push<D: Deferred + 'static>(&self, deferred: D) -> Stored<'_, D> {
        let site = Location::caller();
        let mut refused = None;
        let stored = self.exclusively(|arena| {
            arena.push(deferred, site, tracking::room, |deferred| {
                refused = Some(deferred);
            })
        });
        match stored {
            Some(stored) => stored,
            None => {
                // Dropped once the scope is free again: its captures' drop may use the scope.
                drop_quietly(refused);
                self.limit_reached(site)
            }
        }
    }

    /// Panics for a cleanup registered at `site` past the limit.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn limit_reached(&self, site: &'static Location<'static>) -> ! {
        let refused = self.exclusively(|arena| tracking::refuse(arena, (), site));
        tracking::limit_reached(&refused, "or give the scope a larger limit")
    }

    #[inline]
    #[track_caller]
    fn push_future<F, const WHEN: u8>(&self, cleanup: F)
    where
        F: Future<Output: AsyncOutput> + Send + 'static,
    {
        self.push(Pending::<WHEN> {
            future: Box::pin(async move { cleanup.await.into_result() }),
            site: Location::caller(),
        });
    }

    #[allow(clippy::mut_from_ref)] // as in `hold_async`
    #[track_caller]
    fn hold_with<T, C, F>(&self, value: T, cleanup: C) -> &mut T
    where
        T: Send + 'static,
        C: FnOnce(T) -> F + Send + 'static,
        F: Future<Output: AsyncOutput> + Send + 'static,
    {
        let held = self.push(HeldAsync {
            held: Held { value, cleanup },
            site: Location::caller(),
            future: PhantomData,
        });
        &mut held.into_mut().held.value
    }

    /// Runs and awaits every pending cleanup, last first, catching every panic.
    async fn drain(&mut self, outcome: Outcome) -> Drained {
        self.arena.forget_all_sites();
        let mut context = DrainContext::new(outcome);
        let mut panic = None;
        loop {
            let started = match self.start_next(&mut context, &mut panic) {
                Step::Done => break,
                Step::Ran => continue,
                Step::Await(started) => started,
            };
            let site = started.site;
            let in_flight = self.in_flight.insert(started);
            match await_caught(in_flight.future.as_mut()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    context.record_error(site, error);
                }
                Err(payload) => record_panic(&mut context, &mut panic, payload),
            }
            // Nothing left to drop but the box: the wrapper made by `push_future` or
            // `HeldAsync::start` drops the cleanup's own future when it completes, inside the
            // caught poll.
            self.in_flight = None;
        }
        Drained { context, panic }
    }

    /// Consumes the last pending cleanup: runs a sync closure (recording its panic), or
    /// hands back the future of an async one.
    #[inline]
    fn start_next(
        &mut self,
        context: &mut DrainContext,
        panic: &mut Option<Payload>,
    ) -> Step<'static> {
        match catch_unwind(AssertUnwindSafe(|| self.arena.start_last(context))) {
            Ok(step) => step,
            Err(payload) => {
                record_panic(context, panic, payload);
                Step::Ran
            }
        }
    }

    /// The cancellation path: runs the pending sync closures and hands over (or reports) the
    /// futures, last first, beginning with the one that was being awaited.
    fn cancel(&mut self) {
        self.arena.forget_all_sites();
        let mut context = DrainContext::new(Outcome::Failure);
        let in_flight = self.in_flight.take();
        let mut futures: Vec<Started<'static>> = Vec::new();
        let mut panic = None;
        loop {
            match self.start_next(&mut context, &mut panic) {
                Step::Done => break,
                Step::Ran => {}
                Step::Await(started) => futures.push(started),
            }
        }
        if in_flight.is_some() || !futures.is_empty() {
            detach(in_flight, futures);
        }
        if let Some(payload) = panic {
            if std::thread::panicking() {
                drop_payload(payload);
            } else {
                resume_unwind(payload);
            }
        }
    }
}

impl Drop for AsyncScope {
    fn drop(&mut self) {
        if self.arena.len() != 0 || self.in_flight.is_some() {
            self.cancel();
        }
    }
}

impl<T> crate::Held<'_, T, AsyncScope> {
    /// Awaits the cleanup now, with the value, out of order; the other cleanups keep theirs.
    /// A panic of the cleanup resumes here. If this future is dropped before the cleanup's
    /// completes, the cleanup's future is handed over as a cancelled scope's are (spawned on
    /// the tokio runtime, or reported).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use scoped_defer::{Held, async_scope};
    /// use tokio::sync::mpsc;
    ///
    /// let (log, mut read) = mpsc::unbounded_channel();
    /// async_scope(async |s| {
    ///     let stop = log.clone();
    ///     s.defer(move || log.send(String::from("scope ended")).unwrap());
    ///     let server = s.hold_async_entry(8080, move |port| async move {
    ///         stop.send(format!("stopped {port}")).unwrap();
    ///     });
    ///     Held::run_now_async(server).await;
    /// })
    /// .await;
    /// assert_eq!(read.recv().await.unwrap(), "stopped 8080");
    /// assert_eq!(read.recv().await.unwrap(), "scope ended");
    /// # }
    /// ```
    pub async fn run_now_async(this: Self) {
        let (scope, claim) = crate::Held::into_parts(this);
        let taken = scope.exclusively(|arena| {
            tracking::count_entry(arena, arena.line_of(&claim), Consumed::Ran);
            arena.take_entry(claim)
        });
        let Some(started) = taken.start(&mut DrainContext::new(Outcome::Success)) else {
            return;
        };
        // Dropped before the cleanup completes: handed over like a cancelled scope's.
        let mut in_flight = scopeguard::guard(Some(started), |started| {
            if let Some(started) = started {
                detach(Some(started), Vec::new());
            }
        });
        let future = &mut in_flight.as_mut().expect("just set").future;
        let awaited = await_caught(future.as_mut()).await;
        // Completed: nothing is left to hand over.
        *in_flight = None;
        match awaited {
            // Only plain cleanups are held this way: they cannot fail.
            Ok(result) => debug_assert!(result.is_ok(), "a plain cleanup failed"),
            Err(payload) => resume_unwind(payload),
        }
    }
}

impl core::fmt::Debug for AsyncScope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsyncScope").finish_non_exhaustive()
    }
}

/// Runs `body` with a fresh [`AsyncScope`], then awaits its cleanups, last registered first,
/// whether the body returned or panicked; a panic of the body resumes afterwards.
///
/// The future of `async_scope` is `Send` whenever the body's is, so it can be
/// `tokio::spawn`ed. If it is dropped before it completes, the scope is cancelled: see
/// [`AsyncScope`]'s [Cancellation](AsyncScope#cancellation). The body itself may borrow
/// anything; the cleanups are `'static`.
///
/// # Panics
///
/// With the body's panic, or else the first panic of a cleanup, once every cleanup has ended;
/// if a fallible cleanup failed, since nothing can return its error: use
/// [`try_async_scope`] for those.
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// use std::sync::{Arc, Mutex};
///
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let task_log = Arc::clone(&log);
/// tokio::spawn(async move {
///     scoped_defer::async_scope(async |s| {
///         let log = Arc::clone(&task_log);
///         s.defer_async(async move { log.lock().unwrap().push("closed") });
///         tokio::task::yield_now().await;
///         task_log.lock().unwrap().push("worked");
///     })
///     .await
/// })
/// .await
/// .unwrap();
/// assert_eq!(*log.lock().unwrap(), ["worked", "closed"]);
/// # }
/// ```
pub async fn async_scope<R>(body: impl AsyncFnOnce(&AsyncScope) -> R) -> R {
    let mut scope = AsyncScope::new();
    let result = await_caught(pin!(body(&scope))).await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let drained = scope.drain(outcome).await;
    match result {
        Ok(value) => {
            let site = drained.context.error_sites.first().copied();
            if let Err(errors) = drained.into_result() {
                unreported(errors, site.expect("a failed cleanup records its site"));
            }
            value
        }
        Err(payload) => {
            drained.settle_while_unwinding();
            resume_unwind(payload)
        }
    }
}

/// Runs `body` with a fresh [`AsyncScope`], then awaits its cleanups, last registered first,
/// and reports how both went, as [`try_scope`](crate::try_scope) does: the body's error
/// first, with the cleanups' errors attached; if the body succeeded, the cleanups' errors are
/// the error. Cleanups registered with
/// [`defer_async_on_error`](AsyncScope::defer_async_on_error) are awaited if the body returns
/// `Err` or panics. What [`async_scope`] says about `Send` and cancellation holds here too.
///
/// # Errors
///
/// [`ScopeError::Body`] if the body returned `Err`; [`ScopeError::Cleanup`] if it succeeded
/// but a fallible cleanup failed.
///
/// # Panics
///
/// With the body's panic, or else the first panic of a cleanup, once every cleanup has ended.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use scoped_defer::{ScopeError, try_async_scope};
///
/// let result = try_async_scope(async |s| {
///     s.defer_async_fallible(async { Err::<(), _>("sync_all failed") });
///     Ok::<_, std::io::Error>("written")
/// })
/// .await;
/// let Err(ScopeError::Cleanup(errors)) = result else { panic!("expected a cleanup error") };
/// assert_eq!(errors.first().to_string(), "sync_all failed");
/// # }
/// ```
pub async fn try_async_scope<T, E>(
    body: impl AsyncFnOnce(&AsyncScope) -> Result<T, E>,
) -> Result<T, ScopeError<E>> {
    let mut scope = AsyncScope::new();
    let result = await_caught(pin!(body(&scope))).await;
    let outcome = match &result {
        Ok(result) => Outcome::of(result),
        Err(_) => Outcome::Failure,
    };
    let drained = scope.drain(outcome).await;
    match result {
        Ok(result) => combine(result, drained.into_result()),
        Err(payload) => {
            drained.settle_while_unwinding();
            resume_unwind(payload)
        }
    }
}

/// `Pending`'s `WHEN`: whether the future is awaited on every exit, only on failure, or only
/// on success. A type parameter rather than a field, so that a pending future fits a slot's
/// three words.
const ALWAYS: u8 = 0;
const ON_FAILURE: u8 = 1;
const ON_SUCCESS: u8 = 2;

/// A boxed future waiting for its turn.
struct Pending<const WHEN: u8> {
    future: CleanupFuture<'static>,
    site: &'static Location<'static>,
}

impl<const WHEN: u8> Deferred for Pending<WHEN> {
    fn run(self) {
        unreachable!("async cleanups are only consumed by `start`");
    }

    fn run_in(self, _: &mut DrainContext) {
        unreachable!("async cleanups are only consumed by `start`");
    }

    fn start<'a>(self, context: &mut DrainContext) -> Option<Started<'a>>
    where
        Self: 'a,
    {
        let skipped = match WHEN {
            ON_FAILURE => !context.failed(),
            ON_SUCCESS => context.failed(),
            _ => false,
        };
        if skipped {
            return None;
        }
        Some(Started {
            future: self.future,
            site: self.site,
        })
    }
}

/// A held value with the function that makes its cleanup future, boxed only when it starts.
struct HeldAsync<T, C, F> {
    held: Held<T, C>,
    site: &'static Location<'static>,
    /// Ties `F`'s lifetime to the entry's, for `start`.
    future: PhantomData<fn() -> F>,
}

impl<T, C, F> Deferred for HeldAsync<T, C, F>
where
    C: FnOnce(T) -> F,
    F: Future<Output: AsyncOutput> + Send,
{
    fn run(self) {
        unreachable!("async cleanups are only consumed by `start`");
    }

    fn run_in(self, _: &mut DrainContext) {
        unreachable!("async cleanups are only consumed by `start`");
    }

    fn start<'a>(self, _: &mut DrainContext) -> Option<Started<'a>>
    where
        Self: 'a,
    {
        let future = self.held.call();
        Some(Started {
            future: Box::pin(async move { future.await.into_result() }),
            site: self.site,
        })
    }
}

/// What an async cleanup's future may return: `()` (or `!`), or `Result<(), E>`.
trait AsyncOutput {
    fn into_result(self) -> Result<(), BoxError>;
}

impl<O: CleanupOutput> AsyncOutput for O {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: CleanupError> AsyncOutput for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// What a drain left: the errors and the first panic.
struct Drained {
    context: DrainContext,
    panic: Option<Payload>,
}

impl Drained {
    /// The errors, after resuming the first panic, if any (the errors are reported then).
    fn into_result(self) -> Result<(), CleanupErrors> {
        let Drained { context, panic } = self;
        if let Some(payload) = panic {
            report_lost(context);
            resume_unwind(payload);
        }
        CleanupErrors::from_vec(context.errors).map_or(Ok(()), Err)
    }

    /// For a body that panicked: the body's panic wins, the rest is reported or dropped.
    fn settle_while_unwinding(self) {
        report_lost(self.context);
        if let Some(payload) = self.panic {
            drop_payload(payload);
        }
    }
}

/// Reports each error that a panic keeps from being returned, then drops it, catching a
/// panic of its drop (which would replace the panic that wins, or abort during an unwind).
fn report_lost(context: DrainContext) {
    for (error, site) in context.errors.into_iter().zip(context.error_sites) {
        report::send(ReportKind::ErrorLostToPanic, site, Some(&*error));
        drop_quietly(error);
    }
}

/// Counts a panic, for the outcome that later cleanups see, and keeps the first payload.
fn record_panic(context: &mut DrainContext, first: &mut Option<Payload>, payload: Payload) {
    context.panics += 1;
    match first {
        None => *first = Some(payload),
        Some(_) => drop_payload(payload),
    }
}

/// Awaits `future`, catching a panic of any of its polls.
async fn await_caught<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Result<F::Output, Payload> {
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

#[cold]
#[track_caller]
fn concurrent_registration() -> ! {
    panic!("two threads used one AsyncScope at the same moment")
}

/// Hands the futures of a cancelled scope to the runtime if there is one to spawn them on,
/// else reports and drops them, saying what would have awaited them: first the one that was
/// being awaited, if any, then the others in order.
fn detach(in_flight: Option<Started<'static>>, queued: Vec<Started<'static>>) {
    #[cfg(feature = "tokio")]
    if tokio::runtime::Handle::try_current().is_ok() {
        return spawn_detached(in_flight, queued);
    }
    let why = if cfg!(feature = "tokio") {
        ReportKind::NotAwaitedOutsideRuntime
    } else {
        ReportKind::NotAwaitedWithoutTokio
    };
    abandon(in_flight.into_iter().chain(queued), why);
}

/// Reports futures that nobody will await, in order, with where each was registered, and
/// drops them (catching their panics).
fn abandon(futures: impl IntoIterator<Item = Started<'static>>, why: ReportKind) {
    for Started { future, site } in futures {
        report::send(why, site, None);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(future))) {
            drop_payload(payload);
        }
    }
}

/// Spawns the pending futures of a cancelled scope as one task that awaits them in order,
/// the one that was being awaited first, reporting what fails, since nobody is left to
/// return it to.
#[cfg(feature = "tokio")]
fn spawn_detached(in_flight: Option<Started<'static>>, queued: Vec<Started<'static>>) {
    /// The task's futures, kept where its drop sees them: if the task itself is dropped (a
    /// runtime shutting down), the one being awaited and those not yet started are reported,
    /// so that none is lost in silence.
    struct Detached {
        in_flight: Option<Started<'static>>,
        queued: alloc::collections::VecDeque<Started<'static>>,
    }

    impl Drop for Detached {
        fn drop(&mut self) {
            abandon(self.in_flight.take(), ReportKind::InterruptedAtShutdown);
            abandon(self.queued.drain(..), ReportKind::NotAwaitedAtShutdown);
        }
    }

    // Part-way already: if the runtime shuts down before the task finishes it, it is reported
    // as interrupted, not as never awaited.
    let mut detached = Detached {
        in_flight,
        queued: queued.into(),
    };
    tokio::spawn(async move {
        loop {
            let in_flight = match &mut detached.in_flight {
                Some(in_flight) => in_flight,
                None => match detached.queued.pop_front() {
                    Some(next) => detached.in_flight.insert(next),
                    None => break,
                },
            };
            let site = in_flight.site;
            let awaited = await_caught(in_flight.future.as_mut()).await;
            // Completed: the wrapper of `push_future` or `HeldAsync::start` has dropped the
            // cleanup's own future, inside the caught poll.
            detached.in_flight = None;
            match awaited {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    report::send(ReportKind::FailedAfterCancel, site, Some(&*error));
                    // A panic of its drop would end the task, and the queued cleanups with it.
                    drop_quietly(error);
                }
                Err(payload) => {
                    report::send_panicked(site, &payload);
                    drop_payload(payload);
                }
            }
        }
    });
}

/// For a concurrent loop ([`crate::concurrent`]), which cancels an item by dropping its body
/// and not its scope, then awaits the scope's cleanups itself rather than letting a cancelled
/// scope spawn them: the same drain, with its errors (and their sites) and first panic handed
/// back to be settled across the items, instead of returned, reported or resumed here.
impl AsyncScope {
    pub(crate) async fn drain_for_group(
        &mut self,
        outcome: Outcome,
    ) -> (DrainContext, Option<Payload>) {
        let Drained { context, panic } = self.drain(outcome).await;
        (context, panic)
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering::Relaxed;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::AsyncScope;

    /// The flag's protocol, which a race between two threads can only show by chance.
    #[test]
    fn registration_while_another_holds_the_flag_panics_and_leaves_it_set() {
        let scope = AsyncScope::new();
        scope.busy.store(true, Relaxed);
        let refused = catch_unwind(AssertUnwindSafe(|| scope.defer(|| ())));
        assert!(refused.is_err());
        assert!(
            scope.busy.load(Relaxed),
            "the flag is the other registration's"
        );
        assert_eq!(scope.arena.len(), 0);
        scope.busy.store(false, Relaxed);
        scope.defer(|| ());
        assert!(!scope.busy.load(Relaxed), "released after a registration");
        assert_eq!(scope.arena.len(), 1);
    }

    /// A held value released while another thread holds the flag stays held, its cleanup
    /// pending: before, `release` took the value out first, and the flag's panic dropped it
    /// and left an entry whose cleanup was skipped without a word.
    #[test]
    fn a_release_that_finds_the_flag_taken_leaves_the_entry_whole() {
        use core::pin::pin;
        use core::task::{Context, Poll, Waker};
        use std::string::String;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        use crate::Held;

        let ran = Arc::new(AtomicUsize::new(0));
        let scope = AsyncScope::new();
        let cleanup_ran = Arc::clone(&ran);
        let held = scope.hold_async_entry(String::from("conn"), move |value| async move {
            assert_eq!(value, "conn");
            cleanup_ran.fetch_add(1, SeqCst);
        });
        scope.busy.store(true, Relaxed);
        let released = catch_unwind(AssertUnwindSafe(move || Held::release(held)));
        assert!(released.is_err(), "released while the flag was taken");
        scope.busy.store(false, Relaxed);
        assert_eq!(scope.len(), 1, "the entry stayed");
        let mut finished = pin!(scope.finish());
        match finished
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result.unwrap(),
            Poll::Pending => panic!("the cleanup is ready at once"),
        }
        assert_eq!(ran.load(SeqCst), 1, "its cleanup ran, with its value");
    }

    /// A closure refused at the limit is dropped once the scope is free again, so its drop
    /// may use the scope. Before: it was dropped while the registration held the flag, and
    /// its use of the scope panicked as if another thread held it.
    #[test]
    fn a_refused_closure_s_drop_may_use_the_scope() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        static SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);
        struct LooksAtScope(&'static AsyncScope);
        impl Drop for LooksAtScope {
            fn drop(&mut self) {
                SEEN.store(self.0.len(), SeqCst);
            }
        }
        // In a static, which Miri does not count as leaked.
        static SCOPE: std::sync::OnceLock<AsyncScope> = std::sync::OnceLock::new();
        let scope = SCOPE.get_or_init(|| AsyncScope::with_limit(1));
        scope.defer(|| ());
        let looks = LooksAtScope(scope);
        let refused = catch_unwind(AssertUnwindSafe(move || scope.defer(move || drop(looks))));
        assert!(refused.is_err(), "past the limit");
        assert_eq!(SEEN.load(SeqCst), 1, "the drop saw the scope");
    }
}
