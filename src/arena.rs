//! Type-erased, inline storage for deferred closures: the only module of the crate with
//! `unsafe`.
//!
//! An [`Arena`] is a small vector of [`Slot`]s. A `Slot` is four machine words: a shim pointer and three words of payload. A closure that
//! fits the payload (at most [`INLINE_WORDS`] words, alignment at most that of `usize`) is moved
//! into it; any other closure is boxed and the box pointer is stored instead. The shim is a
//! monomorphised `unsafe fn` that knows which of the two it is looking at and either runs the
//! closure (which consumes it) or only drops it.
//!
//! Ownership protocol: a `Slot` owns its closure until [`Slot::consume`] is called, which
//! happens at most once because it takes the slot by value. `Slot` has no `Drop` impl on
//! purpose: the [`Scope`](crate::Scope) decides when and in which order slots are consumed, and
//! a slot that is never consumed leaks its closure (safe, like `mem::forget`).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::ptr;

use smallvec::SmallVec;

/// Payload words stored inline; larger closures are boxed.
pub(crate) const INLINE_WORDS: usize = 3;

type Payload = MaybeUninit<[usize; INLINE_WORDS]>;

/// What [`Slot::consume`] does with the closure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Action {
    /// Call the closure (which drops its captures when it returns or unwinds).
    Run,
    /// Drop the closure's captures without calling it.
    Discard,
}

/// One type-erased `FnOnce()` closure.
pub(crate) struct Slot<'env> {
    /// Invariant: `shim` was created together with `payload` by [`Slot::new`] for one closure
    /// type `F`, and `payload` still holds that closure (inline or boxed).
    shim: unsafe fn(*mut Payload, Action),
    payload: Payload,
    /// The erased closure may borrow data of `'env` and need not be `Send` or `Sync`: this
    /// marker gives the slot exactly the auto traits and variance of a boxed closure.
    _closure: PhantomData<Box<dyn FnOnce() + 'env>>,
}

static_assertions::assert_eq_size!(Slot<'static>, [usize; 4]);
static_assertions::assert_eq_align!(Slot<'static>, usize);
static_assertions::assert_not_impl_any!(Slot<'static>: Send, Sync);

impl<'env> Slot<'env> {
    /// Whether closures of type `F` are stored without a heap allocation.
    pub(crate) const fn is_inline<F>() -> bool {
        mem::size_of::<F>() <= mem::size_of::<Payload>()
            && mem::align_of::<F>() <= mem::align_of::<Payload>()
    }

    /// Erases `f`. Allocates exactly once if `f` does not fit inline, never otherwise.
    #[inline(always)]
    pub(crate) fn new<F: FnOnce() + 'env>(f: F) -> Self {
        let mut payload = Payload::uninit();
        if Self::is_inline::<F>() {
            // SAFETY: `is_inline` checked that `F` fits the payload's size and alignment, and
            // `payload` is a local we own. `inline_shim::<F>` reads back exactly this `F`.
            unsafe { payload.as_mut_ptr().cast::<F>().write(f) };
            Slot {
                shim: inline_shim::<F>,
                payload,
                _closure: PhantomData,
            }
        } else {
            Self::new_boxed(f)
        }
    }

    #[cold]
    #[inline(never)]
    fn new_boxed<F: FnOnce() + 'env>(f: F) -> Self {
        let mut payload = Payload::uninit();
        const { assert!(Self::is_inline::<Box<()>>()) };
        // SAFETY: a `Box<F>` of a sized `F` is one pointer, which fits the payload (checked at
        // compile time above). `boxed_shim::<F>` reads back exactly this `Box<F>`.
        unsafe { payload.as_mut_ptr().cast::<Box<F>>().write(Box::new(f)) };
        Slot {
            shim: boxed_shim::<F>,
            payload,
            _closure: PhantomData,
        }
    }

    /// Runs or drops the closure, consuming the slot. A panic of the closure (or of a drop of
    /// its captures) propagates; the captures have been dropped by then, so nothing leaks or
    /// runs twice.
    #[inline(always)]
    pub(crate) fn consume(self, action: Action) {
        let mut this = mem::ManuallyDrop::new(self);
        // SAFETY: by the field invariant `shim` matches `payload`; taking `self` by value
        // guarantees this is the only consumption of the closure.
        unsafe { (this.shim)(&mut this.payload, action) }
    }
}

/// # Safety
/// `payload` must hold a valid `F` written by [`Slot::new`], which this call moves out.
unsafe fn inline_shim<F: FnOnce()>(payload: *mut Payload, action: Action) {
    // SAFETY: the caller guarantees `payload` holds an `F` that nobody else will read again.
    let f = unsafe { payload.cast::<F>().read() };
    match action {
        Action::Run => f(),
        Action::Discard => drop(f),
    }
}

/// # Safety
/// `payload` must hold a valid `Box<F>` written by [`Slot::new_boxed`], which this call moves
/// out.
unsafe fn boxed_shim<F: FnOnce()>(payload: *mut Payload, action: Action) {
    // SAFETY: the caller guarantees `payload` holds a `Box<F>` that nobody else will read again.
    let f: Box<F> = unsafe { payload.cast::<Box<F>>().read() };
    match action {
        Action::Run => (*f)(),
        Action::Discard => drop(f),
    }
}

/// The pending closures of one scope, in registration order.
pub(crate) struct Arena<'env, const N: usize> {
    /// Invariant: every slot below `len()` owns a closure that has been neither run nor
    /// dropped; slots past `len()` own nothing.
    slots: SmallVec<[Slot<'env>; N]>,
}

impl<'env, const N: usize> Arena<'env, N> {
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        Arena {
            slots: SmallVec::new_const(),
        }
    }

    #[inline(always)]
    pub(crate) fn push<F: FnOnce() + 'env>(&mut self, f: F) {
        let slot = Slot::new(f);
        let len = self.slots.len();
        if len == self.slots.capacity() {
            self.grow();
        }
        // SAFETY: there is room for one more slot (checked or made just above), and `len` was
        // read before `grow`, which does not change the length.
        unsafe {
            self.slots.as_mut_ptr().add(len).write(slot);
            self.slots.set_len(len + 1);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.slots.reserve(1);
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    #[inline(always)]
    pub(crate) fn spilled(&self) -> bool {
        self.slots.spilled()
    }

    /// Moves every pending slot out, leaving this arena empty with its inline capacity.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Self {
        mem::replace(self, Self::new())
    }

    /// Hands every pending slot to a [`Detached`] and leaves the arena empty but allocated.
    #[inline(always)]
    pub(crate) fn detach(&mut self, action: Action) -> Detached<'_, 'env> {
        let len = self.slots.len();
        // SAFETY: with the length set to zero first, the vector will neither read nor drop the
        // `len` initialised slots behind `as_mut_ptr()`, which stay valid and unaliased while
        // `self` is mutably borrowed; `Detached` consumes each of them exactly once.
        unsafe {
            self.slots.set_len(0);
            Detached::new(self.slots.as_mut_ptr(), len, action)
        }
    }
}

/// Consumes slots that have been detached from their vector, last first, and keeps going
/// if one of them panics.
///
/// The hot path ([`Detached::consume_all`]) has no `catch_unwind`: if a closure panics, the
/// unwinding drops this value, and its [`Drop`] consumes the remaining slots with every further
/// panic caught, so the first payload is the one that keeps unwinding.
pub(crate) struct Detached<'a, 'env> {
    /// Invariant: `base[..remaining]` are initialised slots that nothing else will consume.
    base: *mut Slot<'env>,
    remaining: usize,
    action: Action,
    _slots: PhantomData<&'a mut [Slot<'env>]>,
}

impl<'a, 'env> Detached<'a, 'env> {
    /// Takes ownership of the first `len` slots behind `base`.
    ///
    /// # Safety
    /// `base[..len]` must be initialised slots that the caller will neither read nor drop
    /// again (typically it has just set its vector's length to zero), and the memory must
    /// stay valid and unaliased for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn new(base: *mut Slot<'env>, len: usize, action: Action) -> Self {
        Detached {
            base,
            remaining: len,
            action,
            _slots: PhantomData,
        }
    }

    /// Consumes every slot, last first. Panics with the first closure's payload if one
    /// panicked, after all the others have been consumed.
    #[inline(always)]
    pub(crate) fn consume_all(mut self) {
        while let Some(slot) = self.pop() {
            slot.consume(self.action);
        }
    }

    /// Consumes every slot, last first, catching and discarding every panic. For use while the
    /// thread is already unwinding, where a panic escaping a destructor would abort.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn consume_all_caught(mut self) -> usize {
        let mut caught = 0;
        while let Some(slot) = self.pop() {
            let action = self.action;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.consume(action)));
            if let Err(payload) = outcome {
                caught += 1;
                drop_payload(payload);
            }
        }
        caught
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<Slot<'env>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // SAFETY: by the invariant `base[remaining]` is an initialised slot owned by us;
        // decrementing `remaining` first hands its ownership to the caller exactly once.
        Some(unsafe { ptr::read(self.base.add(self.remaining)) })
    }
}

impl Drop for Detached<'_, '_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Only non-empty when a closure panicked inside `consume_all`.
        if self.remaining != 0 {
            self.finish_after_panic();
        }
    }
}

impl Detached<'_, '_> {
    #[cold]
    #[inline(never)]
    fn finish_after_panic(&mut self) {
        let rest = Detached {
            base: self.base,
            remaining: mem::take(&mut self.remaining),
            action: self.action,
            _slots: PhantomData,
        };
        #[cfg(feature = "std")]
        rest.consume_all_caught();
        // Without `std` there is no `catch_unwind`: a second panic aborts, as in `Vec`'s drop.
        #[cfg(not(feature = "std"))]
        rest.consume_all();
    }
}

/// Drops a caught panic payload whose own destructor might panic too.
#[cfg(feature = "std")]
fn drop_payload(mut payload: Box<dyn core::any::Any + Send>) {
    // A destructor that panics hands us the next payload to drop; only a chain that never
    // ends (which no finite program builds on purpose) keeps this loop going.
    while let Err(next) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        payload = next;
    }
}
