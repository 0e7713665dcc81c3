//! Type-erased, inline storage for deferred closures: the only module of the crate with
//! `unsafe`.
//!
//! An [`Arena`] is a small vector of [`Slot`]s. A `Slot` is four machine words: a pointer to
//! the closure type's [`Shims`] and three words of payload. A closure that fits the payload (at
//! most [`INLINE_WORDS`] words, alignment at most that of `usize`) is moved into it; any other
//! closure is boxed and the box pointer is stored instead. The shims are monomorphised
//! `unsafe fn`s that know which of the two they are looking at: one runs the closure (which
//! consumes it), the other only drops it. Keeping both behind one `&'static` pointer costs a
//! slot one word, and saves the run path a test of which to do.
//!
//! Ownership protocol: a `Slot` owns its closure until it is consumed, exactly once, by
//! [`Detached`]. `Slot` has no `Drop` impl on purpose: the [`Scope`](crate::Scope) decides when
//! and in which order slots are consumed, and a slot that is never consumed leaks its closure
//! (safe, like `mem::forget`).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};

use smallvec::SmallVec;

/// Payload words stored inline; larger closures are boxed.
pub(crate) const INLINE_WORDS: usize = 3;

type Payload = MaybeUninit<[usize; INLINE_WORDS]>;

/// What consuming a slot does with its closure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Action {
    /// Call the closure (which drops its captures when it returns or unwinds).
    Run,
    /// Drop the closure's captures without calling it.
    Discard,
}

/// How to consume the closure stored in a payload, one table per closure type and storage.
struct Shims {
    run: unsafe fn(*mut Payload),
    discard: unsafe fn(*mut Payload),
}

/// The shims of an inline closure of type `F`.
struct Inline<F>(PhantomData<F>);

impl<F: FnOnce()> Inline<F> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
    };

    /// # Safety
    /// `payload` must hold a valid `F` written by [`Slot::new`], which this call moves out.
    unsafe fn run(payload: *mut Payload) {
        // SAFETY: the caller guarantees `payload` holds an `F` nobody will read again.
        unsafe { payload.cast::<F>().read()() }
    }

    /// # Safety
    /// As for [`Inline::run`].
    unsafe fn discard(payload: *mut Payload) {
        // SAFETY: as in `run`.
        unsafe { payload.cast::<F>().drop_in_place() }
    }
}

/// The shims of a boxed closure of type `F`.
struct Boxed<F>(PhantomData<F>);

impl<F: FnOnce()> Boxed<F> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
    };

    /// # Safety
    /// `payload` must hold a valid `Box<F>` written by [`Slot::new_boxed`], which this call
    /// moves out.
    unsafe fn run(payload: *mut Payload) {
        // SAFETY: the caller guarantees `payload` holds a `Box<F>` nobody will read again.
        let f: Box<F> = unsafe { payload.cast::<Box<F>>().read() };
        f()
    }

    /// # Safety
    /// As for [`Boxed::run`].
    unsafe fn discard(payload: *mut Payload) {
        // SAFETY: as in `run`.
        unsafe { payload.cast::<Box<F>>().drop_in_place() }
    }
}

/// One type-erased `FnOnce()` closure.
pub(crate) struct Slot<'env> {
    /// Invariant: `shims` were chosen together with `payload` by [`Slot::new`] for one closure
    /// type `F` and storage, and `payload` still holds that closure.
    shims: &'static Shims,
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
        if Self::is_inline::<F>() {
            let mut payload = Payload::uninit();
            // SAFETY: `is_inline` checked that `F` fits the payload's size and alignment, and
            // `payload` is a local we own. `Inline::<F>`'s shims read back exactly this `F`.
            unsafe { payload.as_mut_ptr().cast::<F>().write(f) };
            Slot {
                shims: Inline::<F>::SHIMS,
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
        const { assert!(Self::is_inline::<Box<()>>()) };
        let mut payload = Payload::uninit();
        // SAFETY: a `Box<F>` of a sized `F` is one pointer, which fits the payload (checked at
        // compile time above). `Boxed::<F>`'s shims read back exactly this `Box<F>`.
        unsafe { payload.as_mut_ptr().cast::<Box<F>>().write(Box::new(f)) };
        Slot {
            shims: Boxed::<F>::SHIMS,
            payload,
            _closure: PhantomData,
        }
    }

    /// Runs or drops the closure in place. A panic of the closure (or of a drop of its
    /// captures) propagates; the captures have been dropped by then, so nothing leaks or runs
    /// twice.
    ///
    /// # Safety
    /// `slot` must point to an initialised slot whose closure nothing will consume again.
    #[inline(always)]
    unsafe fn consume_in_place(slot: *mut Self, action: Action) {
        // SAFETY: the caller guarantees `slot` is initialised and consumed only here, so by
        // the field invariant the shims match `payload` and may move the closure out of it.
        unsafe {
            let shims = (*slot).shims;
            let payload = &raw mut (*slot).payload;
            match action {
                Action::Run => (shims.run)(payload),
                Action::Discard => (shims.discard)(payload),
            }
        }
    }
}

/// The pending closures of one scope, in registration order.
pub(crate) struct Arena<'env, const N: usize> {
    /// Storage only. Its own length stays zero, so it never reads, moves or drops a slot by
    /// itself (and, with no length to keep in sync, `push` touches one counter, not two).
    storage: SmallVec<[Slot<'env>; N]>,
    /// Invariant: `storage.as_ptr()[..len]` are slots that own a closure that has been
    /// neither run nor dropped; `len <= storage.capacity()`.
    len: usize,
}

impl<'env, const N: usize> Arena<'env, N> {
    /// Not `const` on purpose: `SmallVec::new_const` hands LLVM an uninitialised constant that
    /// it materialises with a memset of the whole inline buffer (264 bytes for `N = 8`, ~40
    /// instructions) on every scope creation; `SmallVec::new` compiles to one store.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Arena {
            storage: SmallVec::new(),
            len: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn push<F: FnOnce() + 'env>(&mut self, f: F) {
        let len = self.len;
        // Branch on the storage rather than letting `as_mut_ptr` select between the inline
        // and heap pointers: a select loads the heap-pointer field even while inline, and
        // that field shares its bytes with the first inline slot, which the previous push may
        // have just written at an address the CPU had not resolved yet. Mispredicted memory
        // ordering there (a pipeline flush) made every push of an inline scope ~2.5x slower.
        let base = if self.storage.spilled() {
            let base = self.storage.as_mut_ptr();
            if len == self.storage.capacity() {
                self.grow()
            } else {
                base
            }
        } else if len < N {
            self.storage.as_mut_ptr()
        } else {
            self.grow()
        };
        // SAFETY: `len < capacity` now (checked, or made by `grow`, which returned the new
        // buffer), so the write initialises the first free slot, which the new length covers.
        unsafe { base.add(len).write(Slot::new(f)) };
        self.len = len + 1;
    }

    /// Doubles the capacity, moving the stack to the heap the first time, and returns the
    /// new buffer.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) -> *mut Slot<'env> {
        // SAFETY: the first `len` slots are initialised, so the vector may copy them to the
        // new buffer. `Slot` has no drop glue, so even if `reserve` panics with the length
        // set, the vector cannot drop a closure.
        unsafe { self.storage.set_len(self.len) };
        self.storage.reserve(1);
        // SAFETY: back to storage only; `self.len` still counts the (moved) slots.
        unsafe { self.storage.set_len(0) };
        self.storage.as_mut_ptr()
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    #[inline(always)]
    pub(crate) fn spilled(&self) -> bool {
        self.storage.spilled()
    }

    /// Moves every pending slot out, leaving this arena empty with its inline capacity.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Self {
        mem::replace(self, Self::new())
    }

    /// Hands every pending slot to a [`Detached`] and leaves the arena empty but allocated.
    #[inline(always)]
    pub(crate) fn detach(&mut self, action: Action) -> Detached<'_, 'env> {
        let len = mem::take(&mut self.len);
        // SAFETY: with `self.len` zero, the arena will neither read nor drop the `len`
        // initialised slots behind `as_mut_ptr()`, which stay valid and unaliased while
        // `self` is mutably borrowed; `Detached` consumes each of them exactly once.
        unsafe { Detached::new(self.storage.as_mut_ptr(), len, action) }
    }
}

/// Consumes slots that have been detached from their vector, last first, and keeps going
/// if one of them panics.
///
/// The hot path ([`Detached::consume_all`]) has no `catch_unwind`: if a closure panics, the
/// unwinding drops this value, and its [`Drop`] consumes the remaining slots with every further
/// panic caught, so the first payload is the one that keeps unwinding.
pub(crate) struct Detached<'a, 'env> {
    /// Invariant: `base..end` are initialised slots that nothing else will consume.
    base: *mut Slot<'env>,
    end: *mut Slot<'env>,
    action: Action,
    _slots: PhantomData<&'a mut [Slot<'env>]>,
}

impl<'a, 'env> Detached<'a, 'env> {
    /// Takes ownership of the first `len` slots behind `base`.
    ///
    /// # Safety
    /// `base[..len]` must be initialised slots that the caller will neither read nor drop
    /// again (typically it has just set its length to zero), and the memory must
    /// stay valid and unaliased for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn new(base: *mut Slot<'env>, len: usize, action: Action) -> Self {
        // SAFETY: the caller guarantees `base[..len]` lies in one allocation.
        let end = unsafe { base.add(len) };
        Detached {
            base,
            end,
            action,
            _slots: PhantomData,
        }
    }

    /// Consumes every slot, last first. Panics with the first closure's payload if one
    /// panicked, after all the others have been consumed.
    #[inline(always)]
    pub(crate) fn consume_all(mut self) {
        let (base, action) = (self.base, self.action);
        if self.end == base {
            return;
        }
        // A bottom-tested loop: the test at the top would cost two instructions per slot.
        loop {
            // SAFETY: `end > base` within one allocation, so one step back stays in bounds;
            // moving `end` first hands that slot's sole ownership to this call, so nothing
            // consumes it again, even if it panics.
            unsafe {
                self.end = self.end.sub(1);
                Slot::consume_in_place(self.end, action);
            }
            if self.end == base {
                break;
            }
        }
        // Nothing is left for the drop guard to finish.
        mem::forget(self);
    }

    /// Consumes every slot, last first, catching and discarding every panic. For use while the
    /// thread is already unwinding, where a panic escaping a destructor would abort.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn consume_all_caught(mut self) -> usize {
        let mut caught = 0;
        while let Some(slot) = self.pop() {
            let action = self.action;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: `pop` handed us sole ownership of this initialised slot.
                unsafe { Slot::consume_in_place(slot, action) }
            }));
            if let Err(payload) = outcome {
                caught += 1;
                drop_payload(payload);
            }
        }
        caught
    }

    /// The last remaining slot, whose ownership passes to the caller: moving `end` first
    /// means nothing here will consume it again, even if it panics.
    #[cfg(feature = "std")]
    #[inline(always)]
    fn pop(&mut self) -> Option<*mut Slot<'env>> {
        if self.end == self.base {
            return None;
        }
        // SAFETY: `end > base` within one allocation, so one step back stays in bounds.
        self.end = unsafe { self.end.sub(1) };
        Some(self.end)
    }
}

impl Drop for Detached<'_, '_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Only non-empty when a closure panicked inside `consume_all`.
        if self.end != self.base {
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
            end: mem::replace(&mut self.end, self.base),
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
