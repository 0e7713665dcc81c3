//! One type-erased deferred closure: a pointer to its type's shims and three words of payload.
//!
//! A closure that fits the payload (at most [`INLINE_WORDS`] words, alignment at most that of
//! `usize`) is moved into it; any other is boxed and the raw box pointer is stored instead.
//! The shims are monomorphised `unsafe fn`s that know which of the two they are looking at:
//! one runs the closure (which consumes it), one only drops it, and one runs it with what a
//! drain knows (for fallible and outcome-aware closures). Keeping them behind one `&'static`
//! pointer costs a slot one word, and saves the run path a test of which to do.
//!
//! A slot has no lifetime and no `Drop`: the arena that holds it carries the closures'
//! lifetime, and decides when and in which order slots are consumed (a slot never consumed
//! leaks its closure, which is safe, like `mem::forget`).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::ptr::NonNull;

#[cfg(feature = "std")]
use crate::deferred::Started;
use crate::deferred::{Deferred, DrainContext};

/// Payload words stored inline; larger closures are boxed.
const INLINE_WORDS: usize = 3;

type Payload = MaybeUninit<[usize; INLINE_WORDS]>;

/// What consuming a slot does with its closure.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Run the closure (which drops its captures when it returns or unwinds).
    Run,
    /// Drop the closure's captures without running it.
    Discard,
    /// Let the closure see how the scope ended and report its error.
    ///
    /// Invariant: points to a context that outlives the drain holding this mode, and that
    /// nothing else accesses while a slot is consumed.
    RunIn(NonNull<DrainContext>),
}

impl Mode {
    /// Tells the drain's context, if any, that a closure panicked: the closures consumed after
    /// it see a failed scope.
    pub(crate) fn count_panic(self) {
        if let Mode::RunIn(mut context) = self {
            // SAFETY: by the variant's invariant the context outlives the drain and nothing
            // else accesses it between the consumption of two slots, which is where this runs.
            unsafe { context.as_mut() }.panics += 1;
        }
    }
}

/// How to consume the closure stored in a payload, one table per closure type and storage.
struct Shims {
    run: unsafe fn(*mut Payload),
    discard: unsafe fn(*mut Payload),
    run_in: unsafe fn(*mut Payload, &mut DrainContext),
    #[cfg(feature = "std")]
    /// Consumes the closure in an async drain. The lifetime of a returned future is erased;
    /// the arena, which knows its closures' lifetime, puts it back.
    start: unsafe fn(*mut Payload, &mut DrainContext) -> Option<Started<'static>>,
}

#[cfg(feature = "std")]
/// Erases the lifetime of a started future, for the shims' common signature.
///
/// # Safety
/// The future must not be used beyond its real lifetime: the arena gives it back narrowed to
/// the `'env` that every closure it holds outlives.
unsafe fn erase(started: Started<'_>) -> Started<'static> {
    // SAFETY: the two types differ only in a lifetime, so they have one layout; the caller
    // restores a lifetime the future really has.
    unsafe { mem::transmute::<Started<'_>, Started<'static>>(started) }
}

/// The shims of an inline closure of type `D`.
struct Inline<D>(PhantomData<D>);

impl<D: Deferred> Inline<D> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
        run_in: Self::run_in,
        #[cfg(feature = "std")]
        start: Self::start,
    };

    /// # Safety
    /// `payload` must hold a valid `D` written by [`Slot::write`], which this call moves out.
    unsafe fn run(payload: *mut Payload) {
        // SAFETY: the caller guarantees `payload` holds a `D` nobody will read again.
        unsafe { payload.cast::<D>().read() }.run();
    }

    /// # Safety
    /// As for [`Inline::run`].
    unsafe fn discard(payload: *mut Payload) {
        // SAFETY: as in `run`.
        unsafe { payload.cast::<D>().drop_in_place() }
    }

    /// # Safety
    /// As for [`Inline::run`].
    unsafe fn run_in(payload: *mut Payload, context: &mut DrainContext) {
        // SAFETY: as in `run`.
        unsafe { payload.cast::<D>().read() }.run_in(context);
    }

    #[cfg(feature = "std")]
    /// # Safety
    /// As for [`Inline::run`]; the result as for [`erase`].
    unsafe fn start(payload: *mut Payload, context: &mut DrainContext) -> Option<Started<'static>> {
        // SAFETY: as in `run`, and the caller takes on `erase`'s contract.
        unsafe { payload.cast::<D>().read().start(context).map(|s| erase(s)) }
    }
}

/// The shims of a boxed closure of type `D`: the payload holds a pointer from
/// `Box::into_raw`, never a `Box`, so that no unique borrow is asserted over a held value
/// while references to it are alive.
struct Boxed<D>(PhantomData<D>);

impl<D: Deferred> Boxed<D> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
        run_in: Self::run_in,
        #[cfg(feature = "std")]
        start: Self::start,
    };

    /// # Safety
    /// `payload` must hold a pointer written by [`Slot::write_boxed`], whose box this call
    /// takes back.
    unsafe fn take(payload: *mut Payload) -> Box<D> {
        // SAFETY: the caller guarantees the payload holds a `Box::into_raw` pointer to a `D`
        // that nobody will take again.
        unsafe { Box::from_raw(payload.cast::<*mut D>().read()) }
    }

    /// # Safety
    /// As for [`Boxed::take`].
    unsafe fn run(payload: *mut Payload) {
        // SAFETY: as for `take`.
        unsafe { Self::take(payload) }.run();
    }

    /// # Safety
    /// As for [`Boxed::take`].
    unsafe fn discard(payload: *mut Payload) {
        // SAFETY: as for `take`.
        drop(unsafe { Self::take(payload) });
    }

    /// # Safety
    /// As for [`Boxed::take`].
    unsafe fn run_in(payload: *mut Payload, context: &mut DrainContext) {
        // SAFETY: as for `take`.
        unsafe { Self::take(payload) }.run_in(context);
    }

    #[cfg(feature = "std")]
    /// # Safety
    /// As for [`Boxed::take`]; the result as for [`erase`].
    unsafe fn start(payload: *mut Payload, context: &mut DrainContext) -> Option<Started<'static>> {
        // SAFETY: as for `take`, and the caller takes on `erase`'s contract.
        unsafe { Self::take(payload).start(context).map(|s| erase(s)) }
    }
}

/// The shims of a vacant slot, whose closure an entry handle already consumed: every drain
/// passes it by with one call that does nothing, so vacating a slot is O(1) and no drain
/// needs a test of its own. A `static`, so that its address identifies a vacant slot.
static VACANT: Shims = Shims {
    run: |_| (),
    discard: |_| (),
    run_in: |_, _| (),
    #[cfg(feature = "std")]
    start: |_, _| None,
};

/// One type-erased deferred closure, as it sits in the arena's storage.
pub(crate) struct Slot {
    /// Invariant: `shims` were chosen together with `payload` by [`Slot::write`] for one
    /// closure type and storage, and `payload` still holds that closure.
    shims: &'static Shims,
    payload: Payload,
}

static_assertions::assert_eq_size!(Slot, [usize; 4]);
static_assertions::assert_eq_align!(Slot, usize);

impl Slot {
    /// Whether closures of type `D` are stored without a heap allocation.
    const fn is_inline<D>() -> bool {
        mem::size_of::<D>() <= mem::size_of::<Payload>()
            && mem::align_of::<D>() <= mem::align_of::<Payload>()
    }

    /// Writes `deferred` into the free slot at `slot` and returns where the `D` now lives: in
    /// the slot, or (if it does not fit) in a box of its own, allocated here. Either way the
    /// `D` stays at that address until the slot is consumed.
    ///
    /// # Safety
    /// `slot` must be valid for writes of a `Slot` and hold no closure that is still owed a
    /// run or drop. The caller takes over the ownership protocol of the new closure.
    #[inline(always)]
    pub(crate) unsafe fn write<D: Deferred>(slot: *mut Slot, deferred: D) -> NonNull<D> {
        if Self::is_inline::<D>() {
            // SAFETY: `slot` is valid for writes (caller), `is_inline` checked that `D` fits
            // the payload's size and alignment, and `Inline::<D>`'s shims read back exactly
            // this `D`.
            unsafe {
                let payload = (&raw mut (*slot).payload).cast::<D>();
                payload.write(deferred);
                (&raw mut (*slot).shims).write(Inline::<D>::SHIMS);
                NonNull::new_unchecked(payload)
            }
        } else {
            // SAFETY: as the caller guarantees.
            unsafe { Self::write_boxed(slot, deferred) }
        }
    }

    /// [`Slot::write`] for a closure that does not fit inline.
    ///
    /// # Safety
    /// As for [`Slot::write`].
    #[cold]
    #[inline(never)]
    unsafe fn write_boxed<D: Deferred>(slot: *mut Slot, deferred: D) -> NonNull<D> {
        const { assert!(Self::is_inline::<*mut ()>()) };
        let boxed = Box::into_raw(Box::new(deferred));
        // SAFETY: `slot` is valid for writes (caller); a pointer fits the payload (checked at
        // compile time above), and `Boxed::<D>`'s shims read back exactly this pointer.
        unsafe {
            (&raw mut (*slot).payload).cast::<*mut D>().write(boxed);
            (&raw mut (*slot).shims).write(Boxed::<D>::SHIMS);
            NonNull::new_unchecked(boxed)
        }
    }

    /// Runs or drops the closure in place. A panic of the closure (or of a drop of its
    /// captures) propagates; the captures have been dropped by then, so nothing leaks or runs
    /// twice.
    ///
    /// # Safety
    /// `slot` must point to an initialised slot whose closure nothing will consume again.
    #[inline(always)]
    pub(crate) unsafe fn consume_in_place(slot: *mut Self, mode: Mode) {
        // SAFETY: the caller guarantees `slot` is initialised and consumed only here, so by
        // the field invariant the shims match `payload` and may move the closure out of it;
        // `Mode::RunIn`'s invariant makes the context exclusively ours for the call.
        unsafe {
            let shims = (*slot).shims;
            let payload = &raw mut (*slot).payload;
            match mode {
                Mode::Run => (shims.run)(payload),
                Mode::Discard => (shims.discard)(payload),
                Mode::RunIn(mut context) => (shims.run_in)(payload, context.as_mut()),
            }
        }
    }

    /// Moves the closure out of `slot` and leaves the slot vacant: drains pass it by. The
    /// closure now belongs to the returned slot, which must be [consumed](Slot::consume).
    ///
    /// # Safety
    /// `slot` must point to an initialised slot that is pending (not vacant) and to which no
    /// reference is alive: nothing lent out of it by `hold`.
    pub(crate) unsafe fn vacate(slot: *mut Self) -> Self {
        // SAFETY: the caller guarantees an initialised slot that nothing borrows: a bitwise
        // move of its closure (which is not pinned) to the copy, which alone owns it once the
        // shims left behind say the slot holds nothing.
        unsafe {
            let taken = slot.read();
            (&raw mut (*slot).shims).write(&VACANT);
            taken
        }
    }

    /// Whether the slot is vacant.
    ///
    /// # Safety
    /// `slot` must point to an initialised slot.
    pub(crate) unsafe fn is_vacant(slot: *const Self) -> bool {
        // SAFETY: the caller guarantees the slot is initialised.
        core::ptr::eq(unsafe { (*slot).shims }, &VACANT)
    }

    /// Runs or drops the closure of a slot moved out by [`Slot::vacate`].
    pub(crate) fn consume(mut self, mode: Mode) {
        // SAFETY: `self` owns its closure (see `vacate`) and is consumed here, once.
        unsafe { Self::consume_in_place(&raw mut self, mode) }
    }

    #[cfg(feature = "std")]
    /// [`Slot::start_in_place`] for a slot moved out by [`Slot::vacate`].
    ///
    /// # Safety
    /// The result as for [`erase`].
    pub(crate) unsafe fn start(mut self, context: &mut DrainContext) -> Option<Started<'static>> {
        // SAFETY: as in `consume`; the caller takes on `erase`'s contract.
        unsafe { Self::start_in_place(&raw mut self, context) }
    }

    #[cfg(feature = "std")]
    /// Consumes the closure in place for an async drain (see [`Deferred::start`]). A panic
    /// propagates as in [`Slot::consume_in_place`].
    ///
    /// # Safety
    /// As for [`Slot::consume_in_place`]; the result as for [`erase`].
    pub(crate) unsafe fn start_in_place(
        slot: *mut Self,
        context: &mut DrainContext,
    ) -> Option<Started<'static>> {
        // SAFETY: as in `consume_in_place`; the caller takes on `erase`'s contract.
        unsafe { ((*slot).shims.start)(&raw mut (*slot).payload, context) }
    }
}
