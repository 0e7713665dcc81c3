//! Block guards: `defer!`, `defer_on_success!` and `defer_on_unwind!`.
//!
//! The macros expand to a [`scopeguard`] guard bound to a hidden local, so the closure is
//! called exactly where the compiler drops that local: the same machine code as writing the
//! call by hand at every exit of the block.

/// Runs code when the enclosing block ends, or registers it on a [`Scope`](crate::Scope).
///
/// # Block form
///
/// `defer! { ... }` runs its body at the end of the enclosing block, on normal exit and on
/// unwind, in reverse order of the `defer!`s. It costs nothing beyond the body itself. The
/// body borrows what it uses (it is not a `move` closure), so it sees the latest values:
///
/// ```
/// use std::cell::RefCell;
/// use scoped_defer::defer;
///
/// let log = RefCell::new(Vec::new());
/// {
///     defer! { log.borrow_mut().push("first registered, last run"); }
///     defer! { log.borrow_mut().push("last registered, first run"); }
///     log.borrow_mut().push("body");
/// }
/// assert_eq!(*log.borrow(), ["body", "last registered, first run", "first registered, last run"]);
/// ```
///
/// # Scope form
///
/// `defer!(scope => body)` pushes `move || body` onto `scope`, to run when that scope ends.
/// `scope` is any expression of up to six tokens that names a [`Scope`](crate::Scope) or a
/// [`SendScope`](crate::SendScope), or a reference to one: `s`, `self.cleanups`, `c.scope`,
/// `*s`, `scopes[i]`. Put a longer expression in parentheses: `defer!((make().scope) => ..)`.
///
/// ```
/// use std::cell::RefCell;
/// use scoped_defer::{defer, scope, Scope};
///
/// let log = RefCell::new(Vec::new());
/// scope(|s| {
///     for name in ["a", "b"] {
///         let log = &log;
///         defer!(s => log.borrow_mut().push(name));
///     }
/// });
/// assert_eq!(*log.borrow(), ["b", "a"]);
///
/// struct Connection<'a> {
///     cleanups: Scope<'a>,
/// }
///
/// impl<'a> Connection<'a> {
///     fn open(&self, log: &'a RefCell<Vec<&'static str>>) {
///         defer!(self.cleanups => log.borrow_mut().push("closed"));
///     }
/// }
///
/// let log = RefCell::new(Vec::new());
/// let connection = Connection { cleanups: Scope::new() };
/// connection.open(&log);
/// drop(connection);
/// assert_eq!(*log.borrow(), ["closed"]);
/// ```
#[macro_export]
macro_rules! defer {
    // The scope form: up to six tokens, then `=>`. The count keeps the search short for the
    // block form, which never has a `=>` outside a group.
    (@find [$($scope:tt)+] [$($left:tt)*] => $($body:tt)*) => {
        ($($scope)+).defer(move || { $($body)* })
    };
    (@find [$($seen:tt)*] [$count:tt $($left:tt)*] $next:tt $($rest:tt)*) => {
        $crate::defer!(@find [$($seen)* $next] [$($left)*] $($rest)*)
    };
    (@find [$($seen:tt)*] [$($left:tt)*] $($rest:tt)*) => {
        let _guard = $crate::__private::scopeguard::guard((), |()| { $($seen)* $($rest)* });
    };
    ($($tokens:tt)*) => {
        $crate::defer!(@find [] [_ _ _ _ _ _] $($tokens)*)
    };
}

/// Runs code at the end of the enclosing block unless the block is left by a panic that began
/// after this point.
///
/// Unlike a check of `std::thread::panicking()` at the end of the block, this is not fooled by
/// a panic that was already unwinding when the guard was created: a guard made inside a
/// destructor that runs during an unwind, and left normally, counts as success.
///
/// Requires the `std` feature.
///
/// ```
/// use std::cell::Cell;
/// use scoped_defer::defer_on_success;
///
/// let committed = Cell::new(false);
/// {
///     defer_on_success! { committed.set(true); }
/// }
/// assert!(committed.get());
///
/// let committed = Cell::new(false);
/// let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
///     defer_on_success! { committed.set(true); }
///     panic!("the transaction failed");
/// }));
/// assert!(result.is_err());
/// assert!(!committed.get());
/// ```
///
/// # Limitation
///
/// Rust exposes only whether the thread is panicking, not how many panics are in flight. A
/// guard created while an earlier panic is already unwinding therefore cannot see a second
/// panic that begins (and is caught) inside the same destructor; it treats that exit as
/// success. Where the outcome matters in such code, decide it explicitly, for example from
/// the `Result` of a `catch_unwind`.
#[cfg(feature = "std")]
#[macro_export]
macro_rules! defer_on_success {
    ($($body:tt)*) => {
        let _guard = $crate::__private::on_success(|| { $($body)* });
    };
}

/// Runs code at the end of the enclosing block only if the block is left by a panic that
/// began after this point.
///
/// Requires the `std` feature. See [`defer_on_success!`] for how the outcome is decided.
///
/// ```
/// use std::cell::Cell;
/// use scoped_defer::defer_on_unwind;
///
/// let rolled_back = Cell::new(false);
/// let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
///     defer_on_unwind! { rolled_back.set(true); }
///     panic!("step 2 failed");
/// }));
/// assert!(result.is_err());
/// assert!(rolled_back.get());
///
/// let rolled_back = Cell::new(false);
/// {
///     defer_on_unwind! { rolled_back.set(true); }
/// }
/// assert!(!rolled_back.get());
/// ```
#[cfg(feature = "std")]
#[macro_export]
macro_rules! defer_on_unwind {
    ($($body:tt)*) => {
        let _guard = $crate::__private::on_unwind(|| { $($body)* });
    };
}

/// Not public API. Referenced by macro-generated code.
#[doc(hidden)]
pub mod __private {
    pub use scopeguard;

    /// Whether the thread was already panicking when a guard was created.
    #[cfg(feature = "std")]
    #[derive(Clone, Copy, Debug)]
    pub struct PanicState {
        panicking_at_start: bool,
    }

    #[cfg(feature = "std")]
    impl PanicState {
        #[inline]
        pub fn now() -> Self {
            PanicState {
                panicking_at_start: std::thread::panicking(),
            }
        }

        /// Whether a panic that began after [`PanicState::now`] is unwinding.
        #[inline]
        pub fn unwinding_since(self) -> bool {
            !self.panicking_at_start && std::thread::panicking()
        }
    }

    #[cfg(feature = "std")]
    #[must_use = "the guard runs its closure when dropped; bind it to a named variable"]
    #[inline(always)]
    pub fn on_success<F: FnOnce()>(
        f: F,
    ) -> scopeguard::ScopeGuard<PanicState, impl FnOnce(PanicState)> {
        scopeguard::guard(PanicState::now(), move |state: PanicState| {
            if !state.unwinding_since() {
                f()
            }
        })
    }

    #[cfg(feature = "std")]
    #[must_use = "the guard runs its closure when dropped; bind it to a named variable"]
    #[inline(always)]
    pub fn on_unwind<F: FnOnce()>(
        f: F,
    ) -> scopeguard::ScopeGuard<PanicState, impl FnOnce(PanicState)> {
        scopeguard::guard(PanicState::now(), move |state: PanicState| {
            if state.unwinding_since() {
                f()
            }
        })
    }
}
