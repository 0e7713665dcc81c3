//! Handles to single entries of a scope: [`Entry`] for a deferred closure, [`Held`] for a
//! value held with its cleanup. What `ScopeGuard::into_inner` and `DropGuard::dismiss` are to
//! one guard, for one entry of a dynamic stack.
//!
//! A handle borrows its scope, so no drain, `take` or `dismiss` can happen while it lives.
//! Consuming an entry early leaves its slot vacant, which every drain passes by in O(1); the
//! other entries keep their order.

use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::arena::{Claim, EntryEnd, Lent, Taken};

/// How a scope consumes one of its entries early: counts it, calls the last argument once
/// nothing can stop it from taking the entry out (an `AsyncScope` used by another thread
/// at the same moment panics before), then takes it out and consumes it.
pub(crate) type ConsumeEntry<S> = fn(&S, Claim<'_>, EntryEnd, &mut dyn FnMut());

/// A handle to one closure registered by `defer_entry` ([`Scope::defer_entry`],
/// [`SendScope::defer_entry`], [`AsyncScope::defer_entry`]).
///
/// [`cancel`](Entry::cancel) drops the closure unrun, [`run_now`](Entry::run_now) runs it out
/// of order; dropping the handle leaves it registered, to run with the others.
///
/// ```
/// use std::cell::RefCell;
/// use scoped_defer::Scope;
///
/// let log = RefCell::new(Vec::new());
/// {
///     let scope = Scope::new();
///     scope.defer(|| log.borrow_mut().push("close file"));
///     let unlock = scope.defer_entry(|| log.borrow_mut().push("unlock"));
///     scope.defer(|| log.borrow_mut().push("flush"));
///     unlock.cancel(); // handed over to someone else: not ours to undo
/// }
/// assert_eq!(*log.borrow(), ["flush", "close file"]);
/// ```
///
/// A handle cannot outlive its scope's borrow:
///
/// ```compile_fail,E0505
/// let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
/// let entry = scope.defer_entry(|| ());
/// drop(scope);
/// entry.cancel();
/// ```
///
/// and no drain can happen while one lives:
///
/// ```compile_fail,E0502
/// let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
/// let entry = scope.defer_entry(|| ());
/// scope.run_now();
/// entry.run_now();
/// ```
///
/// [`Scope::defer_entry`]: crate::Scope::defer_entry
/// [`SendScope::defer_entry`]: crate::SendScope::defer_entry
/// [`AsyncScope::defer_entry`]: crate::AsyncScope::defer_entry
pub struct Entry<'a, S: ?Sized> {
    scope: &'a S,
    claim: Claim<'a>,
    consume: ConsumeEntry<S>,
}

impl<'a, S: ?Sized> Entry<'a, S> {
    pub(crate) fn new(scope: &'a S, claim: Claim<'a>, consume: ConsumeEntry<S>) -> Self {
        Entry {
            scope,
            claim,
            consume,
        }
    }

    /// Drops the closure without running it (its captures are dropped now). The scope's stats
    /// count it as dismissed.
    pub fn cancel(self) {
        (self.consume)(self.scope, self.claim, EntryEnd::Discard, &mut || {});
    }

    /// Runs the closure now, out of order; the others keep theirs. A panic of the closure
    /// propagates (unless the thread is already panicking: then it is caught and dropped, as
    /// a scope's drain does). The scope's stats count it as run.
    pub fn run_now(self) {
        (self.consume)(self.scope, self.claim, EntryEnd::Run, &mut || {});
    }
}

impl<S: ?Sized> fmt::Debug for Entry<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

/// A value held by a scope with its cleanup, as `hold` does, and a handle to that one entry:
/// it derefs to the value; [`release`](Held::release) gives the value back with its cleanup
/// dropped unrun, and `run_now` runs the cleanup now. Dropping the handle leaves the cleanup
/// registered.
///
/// "Undo only if a later step fails", with no flag to keep:
///
/// ```
/// use scoped_defer::{Held, Scope};
///
/// struct Service;
/// impl Service {
///     fn stop(self) { /* ... */ }
/// }
///
/// fn start(healthy: bool) -> Result<Service, &'static str> {
///     let s = Scope::new();
///     let service = s.hold_entry(Service, Service::stop); // stopped if we return early
///     if !healthy {
///         return Err("health check failed");
///     }
///     Ok(Held::release(service)) // kept: its cleanup never runs
/// }
///
/// assert!(start(true).is_ok());
/// assert!(start(false).is_err());
/// ```
///
/// `release` and `run_now` are associated functions (`Held::release(h)`), so that they never
/// shadow a method of the value.
pub struct Held<'a, T, S: ?Sized> {
    /// Invariant: `Some` until `release` takes it.
    value: Lent<'a, Option<T>>,
    scope: &'a S,
    claim: Claim<'a>,
    consume: ConsumeEntry<S>,
}

impl<'a, T, S: ?Sized> Held<'a, T, S> {
    pub(crate) fn new(
        value: Lent<'a, Option<T>>,
        scope: &'a S,
        claim: Claim<'a>,
        consume: ConsumeEntry<S>,
    ) -> Self {
        Held {
            value,
            scope,
            claim,
            consume,
        }
    }

    /// Gives the value back; its cleanup is dropped unrun (the scope's stats count it as
    /// dismissed).
    ///
    /// # Panics
    ///
    /// If dropping the cleanup's captures panics (the value is dropped too, then).
    pub fn release(mut this: Self) -> T {
        let mut value = None;
        let slot = &mut this.value;
        // Taken out only once the entry is sure to leave: a panic before leaves it whole,
        // value and cleanup.
        (this.consume)(this.scope, this.claim, EntryEnd::Discard, &mut || {
            value = slot.get_mut().take();
        });
        value.expect("held until released")
    }

    /// The scope and the claim, for a scope that consumes the entry its own way.
    #[cfg(feature = "std")]
    pub(crate) fn into_parts(this: Self) -> (&'a S, Claim<'a>) {
        (this.scope, this.claim)
    }

    /// Runs the cleanup now, with the value, out of order; the other closures keep theirs. A
    /// panic of the cleanup propagates (unless the thread is already panicking: then it is
    /// caught and dropped, as a scope's drain does). The scope's stats count it as run.
    ///
    /// For an [`AsyncScope`](crate::AsyncScope), whose cleanups are futures, use
    /// [`run_now_async`](Held::run_now_async), which awaits it; this hands the future over as
    /// a cancelled scope does (spawned on the tokio runtime, or reported).
    ///
    /// ```
    /// use std::cell::Cell;
    /// use scoped_defer::{Held, Scope};
    ///
    /// let stopped = Cell::new(0);
    /// let scope = Scope::new();
    /// let service = scope.hold_entry(7, |_| stopped.set(stopped.get() + 1));
    /// Held::run_now(service);
    /// assert_eq!(stopped.get(), 1);
    /// drop(scope);
    /// assert_eq!(stopped.get(), 1, "run once");
    /// ```
    pub fn run_now(this: Self) {
        (this.consume)(this.scope, this.claim, EntryEnd::Run, &mut || {});
    }
}

impl<T, S: ?Sized> Deref for Held<'_, T, S> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value.get().as_ref().expect("held until released")
    }
}

impl<T, S: ?Sized> DerefMut for Held<'_, T, S> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.get_mut().as_mut().expect("held until released")
    }
}

impl<T: fmt::Debug, S: ?Sized> fmt::Debug for Held<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Held").field(&**self).finish()
    }
}

/// Consumes a closure taken out early.
pub(crate) fn consume_taken(taken: Taken<'_>, end: EntryEnd) {
    caught_while_unwinding(move || taken.consume(end));
}

/// Runs `consume`, which consumes a closure taken out early. While the thread is already
/// panicking, a panic of the closure (or of its captures' drop) is caught and dropped, as a
/// scope's drain does: a second panic escaping would abort.
pub(crate) fn caught_while_unwinding(consume: impl FnOnce()) {
    #[cfg(feature = "std")]
    if std::thread::panicking() {
        let consumed = std::panic::catch_unwind(core::panic::AssertUnwindSafe(consume));
        if let Err(payload) = consumed {
            crate::arena::drop_payload(payload);
        }
        return;
    }
    consume();
}
