//! [`SendScope`]: a [`Scope`] that accepts only `Send` closures and is itself `Send`.

use core::fmt;

use crate::Scope;
use crate::arena::{Claim, EntryEnd};
use crate::bounds::{CleanupError, CleanupOutput};
use crate::deferred::Plain;
use crate::entry::Entry;
use crate::error::{BoxError, CleanupErrors, LimitExceeded};
use crate::stats::Stats;

/// A [`Scope`] that accepts only `Send` closures (and a `Send` error handler), and so is
/// itself `Send`: it can be moved to another thread, or held across an `.await` in a future
/// that must be `Send`.
///
/// It has the same storage, order, panic and error semantics as [`Scope`]; every method
/// forwards to it with an added `Send` bound.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use scoped_defer::SendScope;
///
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let mut scope: SendScope<'static> = SendScope::new();
/// let for_cleanup = Arc::clone(&log);
/// scope.defer(move || for_cleanup.lock().unwrap().push("cleaned up on the worker"));
/// std::thread::spawn(move || drop(scope)).join().unwrap();
/// assert_eq!(*log.lock().unwrap(), ["cleaned up on the worker"]);
/// ```
///
/// A closure that is not `Send` is refused:
///
/// ```compile_fail,E0277
/// let mut scope: scoped_defer::SendScope<'static> = scoped_defer::SendScope::new();
/// let not_send = std::rc::Rc::new(());
/// scope.defer(move || drop(not_send));
/// ```
pub struct SendScope<'env, const N: usize = 8> {
    /// Invariant: holds only `Send` closures and, if any, a `Send` error handler; never lent
    /// out, so nothing else can be put in.
    inner: Scope<'env, N>,
}

static_assertions::assert_impl_all!(SendScope<'static>: Send);
static_assertions::assert_not_impl_any!(SendScope<'static>: Sync);

impl<'env> SendScope<'env> {
    /// Creates an empty scope with the default `N`. Allocates nothing. See [`Scope::new`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert!(scope.is_empty());
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`Scope::with_limit`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::with_limit(4);
    /// assert_eq!(scope.limit(), Some(4));
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_limit(limit: usize) -> Self {
        SendScope {
            inner: Scope::with_limit(limit),
        }
    }

    /// See [`Scope::with_stats`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::with_stats();
    /// assert!(scope.stats().is_some());
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[track_caller]
    pub fn with_stats() -> Self {
        SendScope {
            inner: Scope::with_stats(),
        }
    }
}

impl<'env, const N: usize> SendScope<'env, N> {
    /// See [`Scope::set_limit`].
    ///
    /// ```
    /// let mut scope: scoped_defer::SendScope<'_, 2> = Default::default();
    /// scope.set_limit(0);
    /// assert!(scope.try_defer(|| ()).is_err());
    /// ```
    #[track_caller]
    pub fn set_limit(&mut self, limit: usize) {
        self.inner.set_limit(limit);
    }

    /// See [`Scope::track_stats`].
    ///
    /// ```
    /// let mut scope: scoped_defer::SendScope<'_, 2> = Default::default();
    /// scope.track_stats();
    /// scope.defer(|| ());
    /// assert_eq!(scope.stats().unwrap().pending, 1);
    /// ```
    #[track_caller]
    pub fn track_stats(&mut self) {
        self.inner.track_stats();
    }

    /// See [`Scope::set_error_handler`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.set_error_handler(|error| eprintln!("cleanup failed: {error}"));
    /// ```
    pub fn set_error_handler(&mut self, handler: impl FnMut(BoxError) + Send + 'env) {
        self.inner.set_error_handler(handler);
    }

    /// See [`Scope::defer`].
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer(|| println!("done"));
    /// assert_eq!(scope.len(), 1);
    /// ```
    #[inline]
    #[track_caller]
    pub fn defer<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'env,
        R: CleanupOutput,
    {
        self.inner.defer(f);
    }

    /// See [`Scope::try_defer`].
    ///
    /// # Errors
    ///
    /// [`LimitExceeded`] holding `f`, when the scope already holds its limit of closures.
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::with_limit(0);
    /// assert!(scope.try_defer(|| ()).is_err());
    /// ```
    #[track_caller]
    pub fn try_defer<F, R>(&self, f: F) -> Result<(), LimitExceeded<F>>
    where
        F: FnOnce() -> R + Send + 'env,
        R: CleanupOutput,
    {
        self.inner.try_defer(f)
    }

    /// See [`Scope::defer_fallible`].
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer_fallible(|| Err::<(), _>("flush failed"));
    /// assert_eq!(scope.finish().unwrap_err().len(), 1);
    /// ```
    #[track_caller]
    pub fn defer_fallible<F, E>(&self, f: F)
    where
        F: FnOnce() -> Result<(), E> + Send + 'env,
        E: CleanupError + 'env,
    {
        self.inner.defer_fallible(f);
    }

    /// See [`Scope::hold`]; the value and the cleanup must be `Send`.
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// let buffer = scope.hold(Vec::new(), |buffer| assert_eq!(buffer, [1, 2]));
    /// buffer.extend([1, 2]);
    /// ```
    ///
    /// A value that is not `Send` is refused:
    ///
    /// ```compile_fail,E0277
    /// let scope: scoped_defer::SendScope<'static> = scoped_defer::SendScope::new();
    /// scope.hold(std::rc::Rc::new(()), drop);
    /// ```
    #[allow(clippy::mut_from_ref)] // as in `Scope::hold`
    #[inline]
    #[track_caller]
    pub fn hold<T, C, R>(&self, value: T, cleanup: C) -> &mut T
    where
        T: Send + 'env,
        C: FnOnce(T) -> R + Send + 'env,
        R: CleanupOutput,
    {
        self.inner.hold(value, cleanup)
    }

    /// See [`Scope::defer_entry`]; the closure must be `Send`.
    ///
    /// # Panics
    ///
    /// As [`defer`](SendScope::defer), past the scope's limit.
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// let entry = scope.defer_entry(|| println!("not printed"));
    /// entry.cancel();
    /// assert!(scope.is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub fn defer_entry<F, R>(&self, f: F) -> Entry<'_, Self>
    where
        F: FnOnce() -> R + Send + 'env,
        R: CleanupOutput,
    {
        let (_, claim) = self.inner.push(Plain(f)).into_entry();
        Entry::new(self, claim, Self::consume_entry)
    }

    /// See [`Scope::hold_entry`]; the value and the cleanup must be `Send`.
    ///
    /// # Panics
    ///
    /// As [`defer`](SendScope::defer), past the scope's limit.
    #[inline]
    #[track_caller]
    pub fn hold_entry<T, C, R>(&self, value: T, cleanup: C) -> crate::Held<'_, T, Self>
    where
        T: Send + 'env,
        C: FnOnce(T) -> R + Send + 'env,
        R: CleanupOutput + 'env,
    {
        let (value, claim) = self.inner.push_held(value, cleanup);
        crate::Held::new(value, self, claim, Self::consume_entry)
    }

    fn consume_entry(&self, claim: Claim<'_>, end: EntryEnd, leaving: &mut dyn FnMut()) {
        self.inner.consume_entry(claim, end, leaving);
    }

    /// See [`Scope::hold_fallible`]; the value and the cleanup must be `Send`.
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// let count = scope.hold_fallible(0, |count| if count == 3 { Ok(()) } else { Err("short") });
    /// *count += 2;
    /// assert_eq!(scope.finish().unwrap_err().first().to_string(), "short");
    /// ```
    #[allow(clippy::mut_from_ref)] // as in `Scope::hold`
    #[inline]
    #[track_caller]
    pub fn hold_fallible<T, C, E>(&self, value: T, cleanup: C) -> &mut T
    where
        T: Send + 'env,
        C: FnOnce(T) -> Result<(), E> + Send + 'env,
        E: CleanupError + 'env,
    {
        self.inner.hold_fallible(value, cleanup)
    }

    /// See [`Scope::defer_on_error`].
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer_on_error(|| panic!("not run: the scope succeeds"));
    /// assert!(scope.finish().is_ok());
    /// ```
    #[track_caller]
    pub fn defer_on_error<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'env,
        R: CleanupOutput,
    {
        self.inner.defer_on_error(f);
    }

    /// See [`Scope::defer_on_success`].
    ///
    /// # Panics
    ///
    /// Past the scope's limit, as [`Scope::defer`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let committed = AtomicBool::new(false);
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer_on_success(|| committed.store(true, Ordering::Relaxed));
    /// scope.finish().unwrap();
    /// assert!(committed.load(Ordering::Relaxed));
    /// ```
    #[track_caller]
    pub fn defer_on_success<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'env,
        R: CleanupOutput,
    {
        self.inner.defer_on_success(f);
    }

    /// See [`Scope::len`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert_eq!(scope.len(), 0);
    /// ```
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// See [`Scope::is_empty`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert!(scope.is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// See [`Scope::capacity`].
    ///
    /// ```
    /// let scope: scoped_defer::SendScope<'_, 4> = scoped_defer::SendScope::default();
    /// assert_eq!(scope.capacity(), 4);
    /// ```
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// See [`Scope::spilled`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert!(!scope.spilled());
    /// ```
    #[inline]
    #[must_use]
    pub fn spilled(&self) -> bool {
        self.inner.spilled()
    }

    /// See [`Scope::limit`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert_eq!(scope.limit(), None);
    /// ```
    #[must_use]
    pub fn limit(&self) -> Option<usize> {
        self.inner.limit()
    }

    /// See [`Scope::stats`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert!(scope.stats().is_none());
    /// ```
    #[must_use]
    pub fn stats(&self) -> Option<Stats> {
        self.inner.stats()
    }

    /// See [`Scope::run_now`].
    ///
    /// # Panics
    ///
    /// As [`Scope::run_now`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer(|| ());
    /// scope.run_now();
    /// assert!(scope.is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub fn run_now(&mut self) {
        self.inner.run_now();
    }

    /// See [`Scope::try_run_now`].
    ///
    /// # Errors
    ///
    /// Every error of a fallible closure, in the order they happened.
    ///
    /// # Panics
    ///
    /// As [`Scope::try_run_now`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// assert!(scope.try_run_now().is_ok());
    /// ```
    pub fn try_run_now(&mut self) -> Result<(), CleanupErrors> {
        self.inner.try_run_now()
    }

    /// See [`Scope::finish`].
    ///
    /// # Errors
    ///
    /// [`CleanupErrors`], if a fallible closure failed.
    ///
    /// # Panics
    ///
    /// As [`Scope::finish`].
    ///
    /// ```
    /// let scope = scoped_defer::SendScope::new();
    /// assert!(scope.finish().is_ok());
    /// ```
    pub fn finish(self) -> Result<(), CleanupErrors> {
        self.inner.finish()
    }

    /// See [`Scope::dismiss`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer(|| unreachable!());
    /// scope.dismiss();
    /// ```
    #[inline]
    pub fn dismiss(&mut self) {
        self.inner.dismiss();
    }

    /// See [`Scope::take`].
    ///
    /// ```
    /// let mut scope = scoped_defer::SendScope::new();
    /// scope.defer(|| ());
    /// let taken = scope.take();
    /// assert_eq!((scope.len(), taken.len()), (0, 1));
    /// ```
    #[must_use = "dropping the taken scope runs its closures at once"]
    #[inline]
    pub fn take(&mut self) -> Self {
        SendScope {
            inner: self.inner.take(),
        }
    }

    /// The scope as a plain [`Scope`], which is not `Send` but accepts any closure.
    ///
    /// ```
    /// let send = scoped_defer::SendScope::new();
    /// let mut local = send.into_local();
    /// let not_send = std::rc::Rc::new(());
    /// local.defer(move || drop(not_send));
    /// ```
    #[must_use = "dropping the scope runs its closures at once"]
    pub fn into_local(self) -> Scope<'env, N> {
        self.inner
    }
}

impl<const N: usize> Default for SendScope<'_, N> {
    /// An empty scope with `N` inline slots. Allocates nothing.
    #[inline]
    fn default() -> Self {
        SendScope {
            inner: Scope::default(),
        }
    }
}

impl<const N: usize> fmt::Debug for SendScope<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SendScope").field(&self.inner).finish()
    }
}
