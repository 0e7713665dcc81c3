//! [`Scope`]: a dynamic LIFO stack of deferred closures with inline storage.

use core::fmt;

use crate::arena::{Action, Arena};

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
/// no heap allocation; a larger or over-aligned one is boxed, one allocation each. Past `N`
/// pending closures the stack moves to the heap once and grows geometrically; [`run_now`]
/// keeps that allocation, which is how the [loop helpers](crate::for_each_scoped) make every
/// iteration after the first free of allocations.
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
/// # Borrowing
///
/// A closure may borrow anything that outlives `'env`, and `'env` outlives the scope:
///
/// ```
/// use scoped_defer::Scope;
///
/// let log = std::cell::RefCell::new(Vec::new());
/// let mut scope: Scope<'_> = Scope::new();
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
/// let mut scope: Scope<'_> = Scope::new();
/// {
///     let name = String::from("short-lived");
///     scope.defer(|| println!("{name}")); // `name` does not live long enough
/// }
/// ```
///
/// [`run_now`]: Scope::run_now
pub struct Scope<'env, const N: usize = 8> {
    arena: Arena<'env, N>,
}

static_assertions::assert_not_impl_any!(Scope<'static>: Send, Sync);
static_assertions::const_assert!(
    core::mem::size_of::<Scope<'static, 8>>() <= (8 * 4 + 2) * core::mem::size_of::<usize>()
);

impl<'env, const N: usize> Scope<'env, N> {
    /// Creates an empty scope. Allocates nothing.
    ///
    /// ```
    /// let scope: scoped_defer::Scope<'_> = scoped_defer::Scope::new();
    /// assert!(scope.is_empty());
    /// ```
    #[must_use = "a scope that is dropped at once runs nothing; bind it to a variable"]
    #[inline]
    pub fn new() -> Self {
        Scope {
            arena: Arena::new(),
        }
    }

    /// Registers `f` to run when the scope ends, after every closure registered later.
    ///
    /// Allocates nothing if `f` fits in three machine words and fewer than `N` closures are
    /// pending; see [Storage](Scope#storage).
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::Scope;
    ///
    /// let order = RefCell::new(Vec::new());
    /// {
    ///     let mut scope: Scope<'_> = Scope::new();
    ///     scope.defer(|| order.borrow_mut().push(1));
    ///     scope.defer(|| order.borrow_mut().push(2));
    /// }
    /// assert_eq!(*order.borrow(), [2, 1]);
    /// ```
    #[inline]
    pub fn defer<F: FnOnce() + 'env>(&mut self, f: F) {
        self.arena.push(f);
    }

    /// The number of pending closures.
    ///
    /// ```
    /// let mut scope: scoped_defer::Scope<'_> = scoped_defer::Scope::new();
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
    /// let mut scope: scoped_defer::Scope<'_> = scoped_defer::Scope::new();
    /// assert!(scope.is_empty());
    /// scope.defer(|| ());
    /// assert!(!scope.is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.arena.len() == 0
    }

    /// The number of closures that can be pending without allocating again: `N` until the
    /// stack has moved to the heap, then its heap capacity.
    ///
    /// ```
    /// let scope: scoped_defer::Scope<'_, 4> = scoped_defer::Scope::new();
    /// assert_eq!(scope.capacity(), 4);
    /// ```
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Whether the stack has outgrown its `N` inline slots and moved to the heap.
    ///
    /// ```
    /// let mut scope: scoped_defer::Scope<'_, 2> = scoped_defer::Scope::new();
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

    /// Runs every pending closure now, last registered first. The scope stays usable and keeps
    /// its storage.
    ///
    /// # Panics
    ///
    /// If a closure panics, the remaining ones still run (their panics are discarded), then the
    /// first panic resumes. The scope is empty afterwards either way.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::Scope;
    ///
    /// let closed = Cell::new(0);
    /// let mut scope: Scope<'_> = Scope::new();
    /// scope.defer(|| closed.set(closed.get() + 1));
    /// scope.run_now();
    /// assert_eq!(closed.get(), 1);
    /// assert!(scope.is_empty());
    /// ```
    #[inline]
    pub fn run_now(&mut self) {
        self.arena.detach(Action::Run).consume_all();
    }

    /// Drops every pending closure without running it (captures are dropped, last registered
    /// first). Like [`run_now`](Scope::run_now), a panic while dropping does not stop the rest.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::Scope;
    ///
    /// let ran = Cell::new(false);
    /// let mut scope: Scope<'_> = Scope::new();
    /// scope.defer(|| ran.set(true));
    /// scope.dismiss();
    /// drop(scope);
    /// assert!(!ran.get());
    /// ```
    #[inline]
    pub fn dismiss(&mut self) {
        self.arena.detach(Action::Discard).consume_all();
    }

    /// Moves every pending closure into a new scope and leaves this one empty, like Python's
    /// `ExitStack.pop_all()`: build something step by step with cleanups that undo each step,
    /// and on success hand the cleanups to the caller instead of running them.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use scoped_defer::Scope;
    ///
    /// let log = RefCell::new(Vec::new());
    /// let handed_over = {
    ///     let mut setup: Scope<'_> = Scope::new();
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
        Scope {
            arena: self.arena.take(),
        }
    }
}

impl<const N: usize> Default for Scope<'_, N> {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Drop for Scope<'_, N> {
    /// Runs every pending closure, last registered first.
    #[inline]
    fn drop(&mut self) {
        if self.arena.len() == 0 {
            return;
        }
        #[cfg(feature = "std")]
        if std::thread::panicking() {
            self.arena.detach(Action::Run).consume_all_caught();
            return;
        }
        self.run_now();
    }
}

impl<const N: usize> fmt::Debug for Scope<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("pending", &self.len())
            .field("capacity", &self.capacity())
            .field("spilled", &self.spilled())
            .finish_non_exhaustive()
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
pub fn scope<'env, R>(f: impl FnOnce(&mut Scope<'env>) -> R) -> R {
    let mut scope = Scope::new();
    f(&mut scope)
}
