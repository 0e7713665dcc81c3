//! Loop helpers that give every iteration its own [`Scope`] and reuse its storage.

use crate::Scope;

/// Calls `f` for every item with a scope whose closures run at the end of that iteration,
/// before the next item is pulled from the iterator.
///
/// This is the loop that Go's `defer` gets wrong: a `defer f.Close()` in a Go loop holds every
/// file open until the function returns, while here each iteration closes its own. One scope
/// is reused for all iterations, so once it has grown to the largest number of closures an
/// iteration registers, no iteration allocates.
///
/// If `f` panics, the closures of that iteration run while the panic unwinds.
///
/// ```
/// use std::cell::{Cell, RefCell};
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
pub fn for_each_scoped<'env, I: IntoIterator>(
    iter: I,
    mut f: impl FnMut(&mut Scope<'env>, I::Item),
) {
    let mut scope = Scope::new();
    for item in iter {
        f(&mut scope, item);
        scope.run_now();
    }
}

/// Like [`for_each_scoped`], but stops at the first error: that iteration's closures run,
/// then the error is returned and no further item is pulled.
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
/// assert_eq!(result, Err("three"));
/// assert_eq!(*log.borrow(), [1, 2, 3]);
/// ```
pub fn try_for_each_scoped<'env, I: IntoIterator, E>(
    iter: I,
    mut f: impl FnMut(&mut Scope<'env>, I::Item) -> Result<(), E>,
) -> Result<(), E> {
    let mut scope = Scope::new();
    for item in iter {
        let outcome = f(&mut scope, item);
        scope.run_now();
        outcome?;
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
/// assert_eq!(result, Err(2));
/// ```
pub trait IteratorExt: Iterator + Sized {
    /// See [`for_each_scoped`].
    #[inline]
    fn for_each_scoped<'env>(self, f: impl FnMut(&mut Scope<'env>, Self::Item)) {
        for_each_scoped(self, f);
    }

    /// See [`try_for_each_scoped`].
    #[inline]
    fn try_for_each_scoped<'env, E>(
        self,
        f: impl FnMut(&mut Scope<'env>, Self::Item) -> Result<(), E>,
    ) -> Result<(), E> {
        try_for_each_scoped(self, f)
    }
}

impl<I: Iterator> IteratorExt for I {}
