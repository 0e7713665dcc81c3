//! Loop helpers that give every iteration its own [`Scope`] and reuse its storage.

use crate::Scope;
use crate::deferred::Outcome;
use crate::ending::combine;
use crate::error::ScopeError;

/// Calls `f` for every item with a scope whose closures run at the end of that iteration,
/// before the next item is pulled from the iterator.
///
/// This is the loop that Go's `defer` gets wrong: a `defer f.Close()` in a Go loop holds every
/// file open until the function returns, while here each iteration closes its own. One scope
/// is reused for all iterations, so once it has grown to the largest number of closures an
/// iteration registers, no iteration allocates.
///
/// If `f` panics, the closures of that iteration run while the panic unwinds. Errors of
/// fallible closures panic once the iteration's closures have run (the scope has no error
/// handler); use [`try_for_each_scoped`] to get them back, or [`for_each_scoped_in`] with a
/// scope that has a handler.
///
/// ```
/// use std::cell::Cell;
/// use scoped_defer::for_each_scoped;
///
/// let open = Cell::new(0);
/// let peak = Cell::new(0);
/// for_each_scoped(0..10_000, |s, _i| {
///     open.set(open.get() + 1); // "open a file"
///     peak.set(peak.get().max(open.get()));
///     s.defer(|| open.set(open.get() - 1)); // "close it" at the end of this iteration
/// });
/// assert_eq!((open.get(), peak.get()), (0, 1));
/// ```
#[track_caller]
pub fn for_each_scoped<'env, I: IntoIterator>(iter: I, f: impl FnMut(&mut Scope<'env>, I::Item)) {
    for_each_scoped_in(&mut Scope::new(), iter, f);
}

/// [`for_each_scoped`] with a scope of your own: one with a [limit](Scope::set_limit),
/// [stats](Scope::track_stats) or an [error handler](Scope::set_error_handler). Its stats then
/// cover every iteration; the `high_water` mark is the most closures one iteration left
/// pending.
///
/// Closures already pending in `scope` are set aside for the loop: each iteration sees, runs
/// and counts against the limit only its own closures, and the earlier ones stay pending,
/// in their place, until `scope` ends. Their lines travel with them: a body that starts stats
/// or a limit puts them down to the line where tracking began. A body that replaces the scope
/// it is lent (`*s = ...`, `mem::take`, `mem::swap`) gets them back in the replacement, whose
/// limit, handler and stats apply to them from then on.
///
/// ```
/// use scoped_defer::{for_each_scoped_in, Scope};
///
/// let mut scope = Scope::with_stats();
/// scope.set_limit(16);
/// for_each_scoped_in(&mut scope, 0..100, |s, _| {
///     s.defer(|| ());
///     s.defer(|| ());
/// });
/// let stats = scope.stats().unwrap();
/// assert_eq!((stats.ran, stats.high_water), (200, 2));
/// ```
#[track_caller]
pub fn for_each_scoped_in<'env, const N: usize, I: IntoIterator>(
    scope: &mut Scope<'env, N>,
    iter: I,
    mut f: impl FnMut(&mut Scope<'env, N>, I::Item),
) {
    let mut aside = SetAside::new(scope);
    let scope = aside.scope();
    for item in iter {
        f(scope, item);
        // Called here, not in a closure, so that `#[track_caller]` reaches the caller.
        scope.run_now();
    }
}

/// A loop's view of the caller's scope: the closures pending before the loop are set aside,
/// and put back when this is dropped, even by a panic. One guard for the whole loop rather
/// than one per iteration: an iteration whose body panics is the only one that leaves closures
/// behind, and they run as failed when the panic drops this.
struct SetAside<'s, 'env, const N: usize> {
    scope: &'s mut Scope<'env, N>,
    earlier: Option<Scope<'env, N>>,
}

impl<'s, 'env, const N: usize> SetAside<'s, 'env, N> {
    #[inline]
    fn new(scope: &'s mut Scope<'env, N>) -> Self {
        let earlier = (!scope.is_empty()).then(|| scope.set_aside());
        SetAside { scope, earlier }
    }

    #[inline]
    fn scope(&mut self) -> &mut Scope<'env, N> {
        self.scope
    }
}

impl<const N: usize> Drop for SetAside<'_, '_, N> {
    #[inline]
    fn drop(&mut self) {
        if !self.scope.is_empty() {
            self.scope.end_after_panic();
        }
        if let Some(earlier) = self.earlier.take() {
            self.scope.put_back(earlier);
        }
    }
}

/// Like [`for_each_scoped`], but stops at the first failed iteration: one whose body returned
/// `Err`, or whose fallible cleanups failed. That iteration's closures run first
/// ([`defer_on_error`](Scope::defer_on_error) ones included when the body failed); no
/// further item is pulled.
///
/// # Errors
///
/// [`ScopeError::Body`] with the body's error (and that iteration's cleanup errors as
/// suppressed), or [`ScopeError::Cleanup`] if only cleanups failed.
///
/// ```
/// use std::cell::RefCell;
/// use scoped_defer::try_for_each_scoped;
///
/// let log = RefCell::new(Vec::new());
/// let result = try_for_each_scoped(1..=5, |s, i| {
///     let log = &log;
///     s.defer(move || log.borrow_mut().push(i));
///     if i == 3 { Err("three") } else { Ok(()) }
/// });
/// assert_eq!(result.unwrap_err().body_error(), Some(&"three"));
/// assert_eq!(*log.borrow(), [1, 2, 3]);
/// ```
pub fn try_for_each_scoped<'env, I: IntoIterator, E>(
    iter: I,
    f: impl FnMut(&mut Scope<'env>, I::Item) -> Result<(), E>,
) -> Result<(), ScopeError<E>> {
    try_for_each_scoped_in(&mut Scope::new(), iter, f)
}

/// [`try_for_each_scoped`] with a scope of your own; see [`for_each_scoped_in`].
///
/// # Errors
///
/// As [`try_for_each_scoped`].
///
/// ```
/// use scoped_defer::{try_for_each_scoped_in, Scope};
///
/// let mut scope = Scope::with_stats();
/// let result = try_for_each_scoped_in(&mut scope, 0..10, |s, i| {
///     s.defer_fallible(move || if i == 4 { Err("closing item 4 failed") } else { Ok(()) });
///     Ok::<(), &str>(())
/// });
/// assert_eq!(result.unwrap_err().to_string(), "cleanup failed: closing item 4 failed");
/// assert_eq!(scope.stats().unwrap().ran, 5);
/// ```
pub fn try_for_each_scoped_in<'env, const N: usize, I: IntoIterator, E>(
    scope: &mut Scope<'env, N>,
    iter: I,
    mut f: impl FnMut(&mut Scope<'env, N>, I::Item) -> Result<(), E>,
) -> Result<(), ScopeError<E>> {
    let mut aside = SetAside::new(scope);
    let scope = aside.scope();
    for item in iter {
        let body = f(scope, item);
        let cleanup = scope.end_with(Outcome::of(&body));
        combine(body, cleanup)?;
    }
    Ok(())
}

/// Method forms of [`for_each_scoped`] and [`try_for_each_scoped`] for every iterator.
///
/// ```
/// use std::cell::Cell;
/// use scoped_defer::IteratorExt;
///
/// let closed = Cell::new(0);
/// (0..3).for_each_scoped(|s, _| s.defer(|| closed.set(closed.get() + 1)));
/// assert_eq!(closed.get(), 3);
///
/// let result = (0..3).try_for_each_scoped(|_, i| if i < 2 { Ok(()) } else { Err(i) });
/// assert_eq!(result.unwrap_err().body_error(), Some(&2));
/// ```
pub trait IteratorExt: Iterator + Sized {
    /// See [`for_each_scoped`].
    #[inline]
    #[track_caller]
    fn for_each_scoped<'env>(self, f: impl FnMut(&mut Scope<'env>, Self::Item)) {
        for_each_scoped(self, f);
    }

    /// See [`try_for_each_scoped`].
    ///
    /// # Errors
    ///
    /// As [`try_for_each_scoped`].
    #[inline]
    fn try_for_each_scoped<'env, E>(
        self,
        f: impl FnMut(&mut Scope<'env>, Self::Item) -> Result<(), E>,
    ) -> Result<(), ScopeError<E>> {
        try_for_each_scoped(self, f)
    }
}

impl<I: Iterator> IteratorExt for I {}
