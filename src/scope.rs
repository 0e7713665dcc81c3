//! [`Scope`]: a dynamic LIFO stack of deferred closures with inline storage. How a scope with
//! fallible or outcome-aware closures ends is in `ending.rs`.

use alloc::boxed::Box;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::panic::Location;

use crate::arena::{Arena, Claim, EntryEnd, Lent, Stored};
use crate::bounds::{CleanupError, CleanupOutput};
use crate::deferred::{Call, Deferred, Fallible, Held, OnFailure, OnSuccess, Outcome, Plain};
use crate::entry::{self, Entry};
use crate::error::{BoxError, CleanupErrors, LimitExceeded};
#[cfg(feature = "std")]
use crate::guard::__private::PanicState;
use crate::stats::{Consumed, Stats};
use crate::tracking::{self, Tracked, Tracking};

/// A stack of deferred closures that run in reverse order of registration when the scope ends.
///
/// This is Go's per-function `defer` chain, or Python's `contextlib.ExitStack`, as a value: you
/// decide where it ends. Closures are registered at run time with [`defer`](Scope::defer) (or
/// the [`defer!`](crate::defer!)`(scope => ...)` shorthand) and run last-in, first-out when the
/// scope is dropped or when [`run_now`](Scope::run_now) is called.
///
/// # Storage
///
/// The first `N` pending closures (default 8) live inside the `Scope` value itself. A closure
/// whose captures take at most three machine words, with alignment at most that of `usize`
/// (a reference plus a `u64`, a `File`, a `String`, a `MutexGuard`), is stored inline and costs
/// no heap allocation; a larger or over-aligned one is boxed, one allocation each. A fallible
/// closure ([`defer_fallible`](Scope::defer_fallible), and a value with its cleanup in
/// [`hold_fallible`](Scope::hold_fallible)) has two words: its slot's third keeps the line
/// that registered it. Past `N` pending closures the stack grows into heap segments, each as
/// large as everything before it. Nothing registered moves while a value is lent out, however
/// many closures are registered meanwhile, which is what lets [`hold`](Scope::hold) lend values
/// out; once none is, the inline ones move with the `Scope` value, and [`take`](Scope::take)
/// moves them into the scope it returns. [`run_now`] keeps the segments, which is how the
/// [loop helpers](crate::for_each_scoped) make every iteration after the first free of
/// allocations.
///
/// # Panics in closures
///
/// A panicking closure does not stop the others: every remaining closure still runs, then the
/// first panic resumes with its original payload. If the scope is dropped while the thread is
/// already unwinding, the panics of its closures are caught and discarded so that the original
/// panic continues (with the `std` feature; without it a second panic aborts, as it does for
/// any destructor). Each closure runs at most once, and its captures are dropped exactly once:
/// after it runs (or panics), or when it is dismissed.
///
/// One case cannot be told apart: a scope dropped normally inside a destructor that runs
/// during an unwind (say, inside a `catch_unwind` there) sees `std::thread::panicking()` and
/// swallows its closures' panics, as it must for a scope dropped by a nested unwind; std
/// exposes no panic count to tell the two apart. To see those panics, end the scope with
/// [`run_now`] (or [`finish`](Scope::finish)) instead of dropping it. The function forms
/// ([`scope`], [`try_scope`](crate::try_scope), the loop helpers) know that their body
/// returned, and always resume the first panic.
///
/// # Outcome-aware cleanups
///
/// [`defer_on_error`](Scope::defer_on_error) and [`defer_on_success`](Scope::defer_on_success)
/// see the outcome as it stands when they run, as the block guards, Go and Python's
/// `ExitStack` do: the body's (its `Err` or panic, inside [`try_scope`](crate::try_scope) and
/// the loop helpers; a panic that began after their registration, for a dropped scope), turned
/// into a failure by any closure that panicked or failed before them in the same drain.
///
/// # Errors, outcomes, limits and stats
///
/// A cleanup that can fail is registered with [`defer_fallible`](Scope::defer_fallible); its
/// error is never lost: [`finish`](Scope::finish) and [`try_scope`](crate::try_scope) return every error, and a
/// scope that is dropped (or [`run_now`](Scope::run_now)) with failed cleanups hands them to
/// its [`set_error_handler`](Scope::set_error_handler) handler, or panics if it has none.
/// [`defer_on_error`](Scope::defer_on_error) and [`defer_on_success`](Scope::defer_on_success)
/// run only if the scope failed or succeeded. [`with_limit`](Scope::with_limit) caps the
/// number of pending closures, and [`stats`](Scope::stats) shows how the scope was used.
///
/// These features allocate one small block per scope the first time one is used (limits and
/// stats a second one, for the lines of the closures, which moves with them); a scope
/// that uses none of them is unchanged in size and speed.
///
/// # Borrowing
///
/// A closure may borrow anything that outlives `'env`, and `'env` outlives the scope:
///
/// ```
/// use scoped_defer::Scope;
///
/// let log = std::cell::RefCell::new(Vec::new());
/// let mut scope = Scope::new();
/// scope.defer(|| log.borrow_mut().push("closed"));
/// drop(scope);
/// assert_eq!(*log.borrow(), ["closed"]);
/// ```
///
/// Borrowing a value that dies before the scope does not compile:
///
/// ```compile_fail,E0597
/// use scoped_defer::Scope;
///
/// let mut scope = Scope::new();
/// {
///     let name = String::from("short-lived");
///     scope.defer(|| println!("{name}")); // `name` does not live long enough
/// }
/// ```
///
/// [`run_now`]: Scope::run_now
pub struct Scope<'env, const N: usize = 8> {
    /// The closures, and what only some scopes need (allocated the first time one does).
    /// Released by the scope's own `drop`, so that the drop glue around it is the inlined test
    /// and nothing else.
    pub(crate) arena: ManuallyDrop<Arena<'env, N, Extras<'env>>>,
}

static_assertions::assert_not_impl_any!(Scope<'static>: Send, Sync);
static_assertions::const_assert!(
    core::mem::size_of::<Scope<'static, 8>>() <= (8 * 4 + 7) * core::mem::size_of::<usize>()
);

/// Limits, stats, error handling, and the state of fallible and outcome-aware closures.
pub(crate) struct Extras<'env> {
    /// The limit and stats.
    pub(crate) tracking: Tracking,
    pub(crate) handler: Option<Box<dyn FnMut(BoxError) + 'env>>,
    /// Whether a pending closure is fallible or outcome-aware, so that drains must give
    /// closures a [`DrainContext`](crate::deferred::DrainContext).
    pub(crate) needs_context: Cell<bool>,
    /// Whether the thread was panicking when the first pending outcome-aware closure was
    /// registered: a drop during a panic that began later is a failure.
    #[cfg(feature = "std")]
    pub(crate) panic_state: Cell<Option<PanicState>>,
}

impl Extras<'_> {
    /// See [`Scope::drains_in_context`].
    fn needs_drain_context(&self) -> bool {
        self.needs_context.get() || self.tracking.has_stats()
    }

    /// Forgets what the pending closures needed, once they are drained, dismissed or moved.
    pub(crate) fn forget_pending(&self) {
        self.needs_context.set(false);
        #[cfg(feature = "std")]
        self.panic_state.set(None);
    }

    fn new() -> Self {
        Extras {
            tracking: Tracking::default(),
            handler: None,
            needs_context: Cell::new(false),
            #[cfg(feature = "std")]
            panic_state: Cell::new(None),
        }
    }
}

impl Default for Extras<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracked for Extras<'_> {
    fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    fn tracking_mut(&mut self) -> &mut Tracking {
        &mut self.tracking
    }
}

impl<'env> Scope<'env> {
    /// Creates an empty scope with the default `N` (8 inline slots). Allocates nothing.
    ///
    /// For another `N`, name the type and use [`Default`]:
    /// `let s: Scope<'_, 32> = Scope::default();`.
    ///
    /// (Not a `const fn`: with the inline buffer built as a constant, LLVM clears all of it on
    /// every creation, about 40 instructions for nothing.)
    ///
    /// ```
    /// let scope = scoped_defer::Scope::new();
    /// scope.defer(|| println!("cleaned up"));
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a scope that holds at most `limit` pending closures: past it,
    /// [`defer`](Scope::defer) panics and [`try_defer`](Scope::try_defer) hands the closure
    /// back. See [`set_limit`](Scope::set_limit).
    ///
    /// A limit turns Go's silent defer-in-a-loop pile-up into an error at the first closure
    /// too many. Allocates twice: the limit, and the record of every closure's line.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let scope = Scope::with_limit(2);
    /// scope.defer(|| ());
    /// scope.defer(|| ());
    /// let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scope.defer(|| ())));
    /// assert!(refused.is_err());
    /// assert_eq!(scope.len(), 2);
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_limit(limit: usize) -> Self {
        let mut scope = Self::new();
        scope.set_limit(limit);
        scope
    }

    /// Creates a scope that tracks [`stats`](Scope::stats). Allocates twice (see
    /// [`with_limit`](Scope::with_limit)). See
    /// [`track_stats`](Scope::track_stats).
    ///
    /// ```
    /// let mut scope = scoped_defer::Scope::with_stats();
    /// scope.defer(|| ());
    /// scope.run_now();
    /// assert_eq!(scope.stats().unwrap().ran, 1);
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_stats() -> Self {
        let mut scope = Self::new();
        scope.track_stats();
        scope
    }
}

impl<'env, const N: usize> Scope<'env, N> {
    /// Caps the number of pending closures at `limit`, from now on: past it,
    /// [`defer`](Scope::defer) (and every other registration) panics, and
    /// [`try_defer`](Scope::try_defer) hands the closure back. Closures already pending stay.
    /// Allocates twice, the first time the scope needs more than its closures: the setting,
    /// and the record of each pending closure's line.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let mut scope: Scope<'_, 2> = Scope::default();
    /// scope.set_limit(1);
    /// scope.defer(|| ());
    /// assert!(scope.try_defer(|| ()).is_err());
    /// assert_eq!(scope.limit(), Some(1));
    /// ```
    #[track_caller]
    pub fn set_limit(&mut self, limit: usize) {
        tracking::set_limit(&mut self.arena, limit, Location::caller());
    }

    /// Starts tracking [`stats`](Scope::stats), counting from the closures pending now.
    /// Allocates twice, the first time the scope needs more than its closures: the setting,
    /// and the record of each pending closure's line.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let mut scope: Scope<'_, 2> = Scope::default();
    /// scope.track_stats();
    /// for _ in 0..3 {
    ///     scope.defer(|| ());
    /// }
    /// scope.run_now();
    /// assert_eq!(scope.stats().unwrap().high_water, 3);
    /// ```
    #[track_caller]
    pub fn track_stats(&mut self) {
        tracking::track_stats(&mut self.arena, Location::caller());
    }

    /// Tells the stats, if any, that every pending closure is leaving the scope as `how`.
    pub(crate) fn count_consumed(&mut self, how: Consumed) {
        tracking::count_consumed(&mut self.arena, how);
    }

    /// Sets the handler that receives the errors of failed cleanups when nobody can return
    /// them: when the scope is dropped, and from [`run_now`](Scope::run_now). Without a
    /// handler, such errors make the scope panic once all its closures have run (or, if the
    /// thread is already panicking, are [reported](crate::report)), so they are never lost in
    /// silence. [`finish`](Scope::finish) and [`try_scope`](crate::try_scope) return errors
    /// instead.
    ///
    /// A handler that panics is treated like a cleanup that panics: the panic resumes once
    /// every error is handed over, or is caught and dropped if the thread is already
    /// unwinding.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::Scope;
    ///
    /// let logged = RefCell::new(Vec::new());
    /// {
    ///     let mut scope = Scope::new();
    ///     scope.set_error_handler(|e| logged.borrow_mut().push(e.to_string()));
    ///     scope.defer_fallible(|| Err::<(), _>("disk full"));
    /// }
    /// assert_eq!(*logged.borrow(), ["disk full"]);
    /// ```
    pub fn set_error_handler(&mut self, handler: impl FnMut(BoxError) + 'env) {
        self.extras_mut().handler = Some(Box::new(handler));
    }

    /// Registers `f` to run when the scope ends, after every closure registered later.
    ///
    /// Allocates nothing if `f` fits in three machine words and fewer than `N` closures are
    /// pending; see [Storage](Scope#storage).
    ///
    /// # Panics
    ///
    /// If the scope was created [`with_limit`](Scope::with_limit) and already holds that many
    /// closures; `f` is dropped without running.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::Scope;
    ///
    /// let order = RefCell::new(Vec::new());
    /// {
    ///     let mut scope = Scope::new();
    ///     scope.defer(|| order.borrow_mut().push(1));
    ///     scope.defer(|| order.borrow_mut().push(2));
    /// }
    /// assert_eq!(*order.borrow(), [2, 1]);
    /// ```
    #[inline]
    #[track_caller]
    pub fn defer<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + 'env,
        R: CleanupOutput,
    {
        self.push_as(Plain(f), true);
    }

    /// Like [`defer`](Scope::defer), but hands `f` back, neither run nor dropped, if the
    /// scope's limit is reached.
    ///
    /// # Errors
    ///
    /// [`LimitExceeded`] holding `f`, when the scope already holds its limit of closures.
    ///
    /// ```
    /// let scope = scoped_defer::Scope::with_limit(0);
    /// let refused = scope.try_defer(|| ()).unwrap_err();
    /// assert_eq!(refused.limit(), 0);
    /// assert!(scope.is_empty());
    /// ```
    #[track_caller]
    pub fn try_defer<F, R>(&self, f: F) -> Result<(), LimitExceeded<F>>
    where
        F: FnOnce() -> R + 'env,
        R: CleanupOutput,
    {
        let site = Location::caller();
        if tracking::room(&self.arena) == 0 {
            return Err(tracking::refuse(&self.arena, f, site));
        }
        self.arena.push(Plain(f), site, tracking::room, drop);
        Ok(())
    }

    /// Registers a cleanup that can fail. Its error is kept: [`finish`](Scope::finish) and
    /// [`try_scope`](crate::try_scope) return it, and a dropped scope hands it to its
    /// [`set_error_handler`](Scope::set_error_handler) handler (or panics without one). This is what Go's
    /// `defer f.Close()` loses.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let mut scope = Scope::new();
    /// scope.defer_fallible(|| -> Result<(), std::io::Error> { Err(std::io::Error::other("sync failed")) });
    /// let errors = scope.finish().unwrap_err();
    /// assert_eq!(errors.first().to_string(), "sync failed");
    /// ```
    #[track_caller]
    pub fn defer_fallible<F, E>(&self, f: F)
    where
        F: FnOnce() -> Result<(), E> + 'env,
        E: CleanupError + 'env,
    {
        self.push_fallible(f);
    }

    /// Moves `value` into the scope and lends it back: Go's `f := open(); defer f.Close()`,
    /// with `f` still usable. When the scope ends, `cleanup` gets the value back, in the same
    /// last-in, first-out order as every other closure.
    ///
    /// The reference lives as long as the borrow of the scope, so several held values can be
    /// used at once and more closures registered meanwhile; ending the scope early
    /// ([`run_now`](Scope::run_now), [`dismiss`](Scope::dismiss), [`take`](Scope::take),
    /// [`finish`](Scope::finish)) needs the references gone. A held value never moves while it
    /// is lent out. Like a closure, a value that fits in three machine words together with
    /// `cleanup`'s captures costs no allocation; a larger one is boxed once.
    ///
    /// If the scope is [dismissed](Scope::dismiss), the value is dropped without `cleanup`.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit; `value` is dropped then.
    ///
    /// ```
    /// use std::io::Write;
    /// use scoped_defer::Scope;
    ///
    /// let sent = std::cell::RefCell::new(Vec::new());
    /// let scope = Scope::new();
    /// // Acquire, defer the cleanup, keep using the value.
    /// let buffer = scope.hold(Vec::new(), |buffer| sent.borrow_mut().extend(buffer));
    /// buffer.write_all(b"hello").unwrap();
    /// scope.defer(|| sent.borrow_mut().extend(b", ")); // more cleanups while `buffer` is lent
    /// buffer.write_all(b"world").unwrap();
    /// drop(scope);
    /// assert_eq!(*sent.borrow(), b", helloworld");
    /// ```
    ///
    /// A held reference cannot outlive the scope's borrow:
    ///
    /// ```compile_fail,E0505
    /// let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
    /// let held = scope.hold(String::from("held"), drop);
    /// drop(scope);
    /// held.push('!');
    /// ```
    #[allow(clippy::mut_from_ref)] // each call lends a different slot, which never moves
    #[inline]
    #[track_caller]
    pub fn hold<T, C, R>(&self, value: T, cleanup: C) -> &mut T
    where
        T: 'env,
        C: FnOnce(T) -> R + 'env,
        R: CleanupOutput,
    {
        &mut self.push(Plain(Held { value, cleanup })).into_mut().0.value
    }

    /// Like [`hold`](Scope::hold), for a cleanup that can fail: its error is kept like that
    /// of [`defer_fallible`](Scope::defer_fallible). This is how a file written through the
    /// scope reports a failed `sync_all` instead of losing it. The value and `cleanup`'s
    /// captures are stored inline if they fit two words (the third keeps the line that
    /// registered them), and boxed once otherwise.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use std::fs::File;
    /// use std::io;
    /// use std::path::PathBuf;
    /// use scoped_defer::{ScopeError, try_for_each_scoped};
    ///
    /// fn copy_all(pairs: &[(PathBuf, PathBuf)]) -> Result<u64, ScopeError<io::Error>> {
    ///     let mut total = 0;
    ///     try_for_each_scoped(pairs, |s, (from, to)| {
    ///         let src = s.hold(File::open(from)?, drop);
    ///         let dst = s.hold_fallible(File::create(to)?, |f| f.sync_all());
    ///         total += io::copy(src, dst)?;
    ///         Ok::<_, io::Error>(())
    ///     })?;
    ///     Ok(total)
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # if cfg!(miri) { return Ok(()); } // Miri runs without a file system
    /// let dir = tempfile::tempdir()?;
    /// let pairs: Vec<_> = (0..3)
    ///     .map(|i| (dir.path().join(format!("{i}.in")), dir.path().join(format!("{i}.out"))))
    ///     .collect();
    /// for (from, _) in &pairs {
    ///     std::fs::write(from, "twelve bytes")?;
    /// }
    /// assert_eq!(copy_all(&pairs)?, 36);
    /// assert_eq!(std::fs::read_to_string(&pairs[2].1)?, "twelve bytes");
    /// # Ok(())
    /// # }
    /// ```
    #[allow(clippy::mut_from_ref)] // as in `hold`
    #[inline]
    #[track_caller]
    pub fn hold_fallible<T, C, E>(&self, value: T, cleanup: C) -> &mut T
    where
        T: 'env,
        C: FnOnce(T) -> Result<(), E> + 'env,
        E: CleanupError + 'env,
    {
        &mut self
            .push_fallible(Held { value, cleanup })
            .into_mut()
            .call
            .value
    }

    /// Like [`defer`](Scope::defer), and returns a handle to this one closure, which can
    /// [cancel](Entry::cancel) it or [run it now](Entry::run_now); dropping the handle leaves
    /// it registered. The handle borrows the scope, so no drain can happen while it lives;
    /// more closures can be registered meanwhile, and keep their order.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::Scope;
    ///
    /// let removed = Cell::new(false);
    /// let scope = Scope::new();
    /// let remove_temp = scope.defer_entry(|| removed.set(true));
    /// // ... the temporary file became the real one: nothing to remove
    /// remove_temp.cancel();
    /// drop(scope);
    /// assert!(!removed.get());
    /// ```
    #[inline]
    #[track_caller]
    pub fn defer_entry<F, R>(&self, f: F) -> Entry<'_, Self>
    where
        F: FnOnce() -> R + 'env,
        R: CleanupOutput,
    {
        let (_, claim) = self.push(Plain(f)).into_entry();
        Entry::new(self, claim, Self::consume_entry)
    }

    /// Like [`hold`](Scope::hold), and returns a handle to this one entry, which derefs to the
    /// value: [`Held::release`](crate::Held::release) gives the value back and its cleanup
    /// never runs, [`Held::run_now`](crate::Held::run_now) runs the cleanup now. Dropping the handle leaves the
    /// cleanup registered. With `release` on success, "undo only if a later step fails"
    /// needs no flag; see [`Held`](crate::Held).
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::{Held, Scope};
    ///
    /// let closed = RefCell::new(Vec::new());
    /// let scope = Scope::new();
    /// let mut log = scope.hold_entry(String::from("started"), |log| closed.borrow_mut().push(log));
    /// log.push_str(", healthy");
    /// let log = Held::release(log);
    /// drop(scope);
    /// assert_eq!(log, "started, healthy");
    /// assert!(closed.borrow().is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub fn hold_entry<T, C, R>(&self, value: T, cleanup: C) -> crate::Held<'_, T, Self>
    where
        T: 'env,
        C: FnOnce(T) -> R + 'env,
        R: CleanupOutput + 'env,
    {
        let (value, claim) = self.push_held(value, cleanup);
        crate::Held::new(value, self, claim, Self::consume_entry)
    }

    /// Stores `value` with `cleanup` for an entry handle: the value lent out, and the claim.
    #[inline]
    #[track_caller]
    pub(crate) fn push_held<T, C, R>(
        &self,
        value: T,
        cleanup: C,
    ) -> (Lent<'_, Option<T>>, Claim<'_>)
    where
        T: 'env,
        C: FnOnce(T) -> R + 'env,
        R: CleanupOutput + 'env,
    {
        let (stored, claim) = self
            .push(Plain(Held {
                value: Some(value),
                cleanup: releasable(cleanup),
            }))
            .into_entry();
        (stored.project(|stored| &mut stored.0.value), claim)
    }

    /// Consumes one entry early, as `end` says, after counting it.
    pub(crate) fn consume_entry(&self, claim: Claim<'_>, end: EntryEnd, leaving: &mut dyn FnMut()) {
        tracking::count_entry(&self.arena, self.arena.line_of(&claim), consumed_as(end));
        leaving();
        entry::consume_taken(self.arena.take_entry(claim), end);
    }

    /// Registers `f` to run only if the scope fails: inside [`try_scope`](crate::try_scope) or
    /// [`try_for_each_scoped`](crate::try_for_each_scoped), if the body returns `Err` or
    /// panics; for a scope that is simply dropped, if a panic that began after this call is
    /// unwinding. Zig's `errdefer`: undo a step only if a later one fails.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::try_scope;
    ///
    /// let log = RefCell::new(Vec::new());
    /// let result: Result<(), _> = try_scope(|s| {
    ///     log.borrow_mut().push("create file");
    ///     s.defer_on_error(|| log.borrow_mut().push("delete file"));
    ///     Err("write failed")
    /// });
    /// assert!(result.is_err());
    /// assert_eq!(*log.borrow(), ["create file", "delete file"]);
    /// ```
    #[track_caller]
    pub fn defer_on_error<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + 'env,
        R: CleanupOutput,
    {
        self.note_outcome_aware();
        self.push(OnFailure(f));
    }

    /// Registers `f` to run only if the scope succeeds; see
    /// [`defer_on_error`](Scope::defer_on_error) for how that is decided.
    ///
    /// # Panics
    ///
    /// As [`defer`](Scope::defer), past the scope's limit.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::try_scope;
    ///
    /// let committed = Cell::new(false);
    /// let result = try_scope(|s| {
    ///     s.defer_on_success(|| committed.set(true));
    ///     Ok::<u32, &str>(7)
    /// });
    /// assert_eq!(result.unwrap(), 7);
    /// assert!(committed.get());
    /// ```
    #[track_caller]
    pub fn defer_on_success<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + 'env,
        R: CleanupOutput,
    {
        self.note_outcome_aware();
        self.push(OnSuccess(f));
    }

    #[inline]
    #[track_caller]
    pub(crate) fn push<D: Deferred + 'env>(&self, deferred: D) -> Stored<'_, D> {
        self.push_as(deferred, false)
    }

    /// Registers `deferred`; past the limit, panics with a message that suggests `try_defer`
    /// if `deferred` is what `defer` registers. The refused closure is dropped first, with its
    /// own panic (if its drop panics) caught, so that the panic seen is the limit's.
    #[inline]
    #[track_caller]
    fn push_as<D: Deferred + 'env>(&self, deferred: D, from_defer: bool) -> Stored<'_, D> {
        let site = Location::caller();
        match self
            .arena
            .push(deferred, site, tracking::room, crate::arena::drop_quietly)
        {
            Some(stored) => stored,
            None => self.limit_reached(site, from_defer),
        }
    }

    /// Panics for a closure registered at `site` past the limit.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn limit_reached(&self, site: &'static Location<'static>, from_defer: bool) -> ! {
        tracking::limit_reached(
            &tracking::refuse(&self.arena, (), site),
            if from_defer {
                "or use try_defer, which hands the closure back"
            } else {
                "or compare len() with limit() before registering"
            },
        )
    }

    #[track_caller]
    fn push_fallible<K, E>(&self, cleanup: K) -> Stored<'_, Fallible<K, E>>
    where
        K: Call<Output = Result<(), E>> + 'env,
        E: CleanupError + 'env,
    {
        self.extras().needs_context.set(true);
        self.push(Fallible {
            call: cleanup,
            site: Location::caller(),
            error: PhantomData,
        })
    }

    fn note_outcome_aware(&self) {
        let extras = self.extras();
        extras.needs_context.set(true);
        #[cfg(feature = "std")]
        if extras.panic_state.get().is_none() {
            extras.panic_state.set(Some(PanicState::now()));
        }
    }

    /// Whether a drain must give the closures a context (fallible or outcome-aware closures
    /// are pending) or count what happened (stats): otherwise it runs them as a scope
    /// without extras does, whatever else the scope has (a limit, a handler).
    #[inline(always)]
    pub(crate) fn drains_in_context(&self) -> bool {
        self.arena.has_extras() && self.arena.extras().is_some_and(Extras::needs_drain_context)
    }

    fn extras(&self) -> &Extras<'env> {
        self.arena.extras_or_insert_with(Extras::new)
    }

    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    fn extras_mut(&mut self) -> &mut Extras<'env> {
        self.extras();
        self.arena.extras_mut().expect("just set")
    }

    /// The number of pending closures.
    ///
    /// ```
    /// let mut scope = scoped_defer::Scope::new();
    /// scope.defer(|| ());
    /// assert_eq!(scope.len(), 1);
    /// ```
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether no closure is pending.
    ///
    /// ```
    /// let mut scope = scoped_defer::Scope::new();
    /// assert!(scope.is_empty());
    /// scope.defer(|| ());
    /// assert!(!scope.is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.arena.len() == 0
    }

    /// The number of closures that can be pending without allocating again: `N` plus the
    /// capacity of the heap segments the scope has grown.
    ///
    /// ```
    /// let scope: scoped_defer::Scope<'_, 4> = scoped_defer::Scope::default();
    /// assert_eq!(scope.capacity(), 4);
    /// ```
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Whether the stack has outgrown its `N` inline slots and grown into the heap.
    ///
    /// ```
    /// let mut scope: scoped_defer::Scope<'_, 2> = scoped_defer::Scope::default();
    /// scope.defer(|| ());
    /// scope.defer(|| ());
    /// assert!(!scope.spilled());
    /// scope.defer(|| ());
    /// assert!(scope.spilled());
    /// ```
    #[inline]
    #[must_use]
    pub fn spilled(&self) -> bool {
        self.arena.spilled()
    }

    /// The limit set by [`with_limit`](Scope::with_limit) or [`set_limit`](Scope::set_limit),
    /// if any.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let limited = Scope::with_limit(3);
    /// assert_eq!(limited.limit(), Some(3));
    /// let unlimited = Scope::new();
    /// assert_eq!(unlimited.limit(), None);
    /// ```
    #[must_use]
    pub fn limit(&self) -> Option<usize> {
        tracking::limit(&self.arena)
    }

    /// How the scope has been used so far, if it tracks stats (created
    /// [`with_stats`](Scope::with_stats), or after [`track_stats`](Scope::track_stats));
    /// `None` otherwise. See [`Stats`] for a recipe that finds closures piling up.
    ///
    /// ```
    /// use scoped_defer::Scope;
    ///
    /// let mut scope: Scope<'_, 2> = Scope::default();
    /// scope.track_stats();
    /// for _ in 0..3 {
    ///     scope.defer(|| ());
    /// }
    /// scope.run_now();
    /// let stats = scope.stats().unwrap();
    /// assert_eq!((stats.registered, stats.ran, stats.high_water), (3, 3, 3));
    /// assert!(stats.spilled);
    /// ```
    #[must_use]
    pub fn stats(&self) -> Option<Stats> {
        tracking::stats(&self.arena)
    }

    /// Runs every pending closure now, last registered first. The scope stays usable and keeps
    /// its storage.
    ///
    /// # Panics
    ///
    /// If a closure panics, the remaining ones still run (their panics are discarded), then the
    /// first panic resumes. The scope is empty afterwards either way. Errors of fallible
    /// closures go to the [`set_error_handler`](Scope::set_error_handler) handler; without one, this panics once
    /// every closure has run. [`try_run_now`](Scope::try_run_now) returns them instead.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::Scope;
    ///
    /// let closed = Cell::new(0);
    /// let mut scope = Scope::new();
    /// scope.defer(|| closed.set(closed.get() + 1));
    /// scope.run_now();
    /// assert_eq!(closed.get(), 1);
    /// assert!(scope.is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub fn run_now(&mut self) {
        if !self.drains_in_context() {
            return self.arena.run_all();
        }
        let drained = self.drain_in(Outcome::Success);
        self.deliver(drained);
    }

    /// Runs every pending closure now, like [`run_now`](Scope::run_now), and returns the errors
    /// of the fallible ones instead of handing them to the handler.
    ///
    /// # Errors
    ///
    /// Every error of a fallible closure, in the order they happened.
    ///
    /// # Panics
    ///
    /// If a closure panics, after every closure has run, with the first payload.
    ///
    /// ```
    /// let mut scope = scoped_defer::Scope::new();
    /// scope.defer_fallible(|| Err::<(), _>("first"));
    /// assert_eq!(scope.try_run_now().unwrap_err().len(), 1);
    /// scope.defer_fallible(|| Ok::<(), &str>(()));
    /// assert!(scope.try_run_now().is_ok());
    /// ```
    pub fn try_run_now(&mut self) -> Result<(), CleanupErrors> {
        self.end_with(Outcome::Success)
    }

    /// Ends the scope: runs every pending closure, last registered first, and returns every
    /// error of the fallible ones, in the order they happened.
    ///
    /// # Errors
    ///
    /// [`CleanupErrors`], if a fallible closure failed.
    ///
    /// # Panics
    ///
    /// If a closure panics, after every closure has run, with the first payload.
    ///
    /// ```
    /// let mut scope = scoped_defer::Scope::new();
    /// scope.defer_fallible(|| Err::<(), _>("close failed"));
    /// scope.defer(|| ());
    /// assert_eq!(scope.finish().unwrap_err().to_string(), "cleanup failed: close failed");
    /// ```
    pub fn finish(mut self) -> Result<(), CleanupErrors> {
        self.end_with(Outcome::Success)
    }

    /// Drops every pending closure without running it (captures are dropped, last registered
    /// first). Like [`run_now`](Scope::run_now), a panic while dropping does not stop the rest.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::Scope;
    ///
    /// let ran = Cell::new(false);
    /// let mut scope = Scope::new();
    /// scope.defer(|| ran.set(true));
    /// scope.dismiss();
    /// drop(scope);
    /// assert!(!ran.get());
    /// ```
    #[inline]
    pub fn dismiss(&mut self) {
        if let Some(extras) = self.arena.extras() {
            extras.forget_pending();
            self.count_consumed(Consumed::Dismissed);
        }
        self.arena.discard_all();
    }

    /// Moves every pending closure into a new scope and leaves this one empty, like Python's
    /// `ExitStack.pop_all()`: build something step by step with cleanups that undo each step,
    /// and on success hand the cleanups to the caller instead of running them.
    ///
    /// The new scope has no limit, stats or error handler of its own: those describe how this
    /// scope is used, and stay. If the taken closures can fail, end the new scope with
    /// [`finish`](Scope::finish), or give it a handler with
    /// [`set_error_handler`](Scope::set_error_handler).
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::Scope;
    ///
    /// let log = RefCell::new(Vec::new());
    /// let handed_over = {
    ///     let mut setup = Scope::new();
    ///     setup.defer(|| log.borrow_mut().push("undo step 1"));
    ///     setup.defer(|| log.borrow_mut().push("undo step 2"));
    ///     setup.take() // success: nothing runs here
    /// };
    /// assert!(log.borrow().is_empty());
    /// drop(handed_over);
    /// assert_eq!(*log.borrow(), ["undo step 2", "undo step 1"]);
    /// ```
    #[must_use = "dropping the taken scope runs its closures at once"]
    #[inline]
    pub fn take(&mut self) -> Self {
        self.count_consumed(Consumed::Taken);
        self.set_aside()
    }

    /// Moves every pending closure into a new scope, with the state they need (uncounted:
    /// a loop sets the caller's closures aside this way, and [`Scope::put_back`] undoes it).
    pub(crate) fn set_aside(&mut self) -> Self {
        let moved = self.arena.extras().and_then(|extras| {
            // The closures that need a context go, and their state with them.
            let moved = extras.needs_context.get().then(|| {
                let moved = Extras::new();
                moved.needs_context.set(true);
                #[cfg(feature = "std")]
                moved.panic_state.set(extras.panic_state.get());
                moved
            });
            extras.forget_pending();
            moved
        });
        let taken = Scope {
            arena: ManuallyDrop::new(self.arena.take()),
        };
        if let Some(extras) = moved {
            taken.arena.extras_or_insert_with(|| extras);
        }
        tracking::keep_tracking(&mut self.arena);
        taken
    }

    /// Puts back closures [set aside](Scope::set_aside), once this scope holds none.
    pub(crate) fn put_back(&mut self, mut earlier: Self) {
        if let Some(moved) = earlier.arena.extras() {
            let extras = self.extras();
            extras.needs_context.set(moved.needs_context.get());
            #[cfg(feature = "std")]
            extras.panic_state.set(moved.panic_state.get());
        }
        let arena = core::mem::replace(&mut *earlier.arena, Arena::new());
        self.arena.put_back(arena);
        tracking::keep_tracking(&mut self.arena);
    }
}

impl<const N: usize> Default for Scope<'_, N> {
    /// An empty scope with `N` inline slots. Allocates nothing.
    #[inline]
    fn default() -> Self {
        Scope {
            arena: ManuallyDrop::new(Arena::new()),
        }
    }
}

impl<const N: usize> Drop for Scope<'_, N> {
    /// Runs every pending closure, last registered first.
    #[inline(always)]
    fn drop(&mut self) {
        if self.arena.is_unused() {
            return;
        }
        // The common case, inlined: every closure plain and in an inline slot.
        if !self.arena.run_if_only_inline() {
            self.drop_slow();
        }
    }
}

impl<const N: usize> Scope<'_, N> {
    #[cold]
    #[inline(never)]
    fn drop_slow(&mut self) {
        // The storage is released however the closures end.
        let mut this = scopeguard::guard(self, |scope| scope.release_on_drop());
        this.drain_on_drop();
    }

    fn drain_on_drop(&mut self) {
        if self.drains_in_context() {
            return self.drop_with_extras();
        }
        if self.arena.len() == 0 {
            return;
        }
        #[cfg(feature = "std")]
        if std::thread::panicking() {
            self.arena.run_all_caught();
            return;
        }
        self.arena.run_all();
    }
}

impl<const N: usize> fmt::Debug for Scope<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("pending", &self.len())
            .field("capacity", &self.capacity())
            .field("spilled", &self.spilled())
            .field("limit", &self.limit())
            .finish_non_exhaustive()
    }
}

/// A held value's cleanup that accepts the value as `Option`, empty once an entry handle
/// released it (then only the cleanup is dropped, never called: a released entry is
/// discarded).
fn releasable<T, R>(cleanup: impl FnOnce(T) -> R) -> impl FnOnce(Option<T>) {
    move |value| {
        if let Some(value) = value {
            cleanup(value);
        }
    }
}

/// How the stats count an entry consumed early.
pub(crate) fn consumed_as(end: EntryEnd) -> Consumed {
    match end {
        EntryEnd::Run => Consumed::Ran,
        EntryEnd::Discard => Consumed::Dismissed,
    }
}

/// Runs `f` with a fresh [`Scope`] and runs the scope's closures when `f` returns or panics,
/// before returning `f`'s result: a Go-style function scope.
///
/// ```
/// use std::cell::RefCell;
///
/// let log = RefCell::new(Vec::new());
/// let answer = scoped_defer::scope(|s| {
///     s.defer(|| log.borrow_mut().push("deferred"));
///     log.borrow_mut().push("body");
///     42
/// });
/// assert_eq!(answer, 42);
/// assert_eq!(*log.borrow(), ["body", "deferred"]);
/// ```
///
/// Closures may not borrow the body's own locals, which are gone by the time they run (the
/// error is E0597 or E0373 depending on the compiler version):
///
/// ```compile_fail
/// scoped_defer::scope(|s| {
///     let local = String::from("gone before the scope ends");
///     s.defer(|| println!("{local}"));
/// });
/// ```
#[inline]
#[track_caller]
pub fn scope<'env, R>(f: impl FnOnce(&mut Scope<'env>) -> R) -> R {
    let mut scope = Scope::new();
    let result = crate::ending::body_of(&mut scope, f);
    // Ended here rather than by the drop, which cannot tell a body that returned inside a
    // destructor from an unwind: the first panic of a closure always resumes.
    scope.run_now();
    result
}
