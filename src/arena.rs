//! Type-erased, inline storage for deferred closures: the only module of the crate with
//! `unsafe`.
//!
//! An [`Arena`] is a small vector of [`Slot`]s. A `Slot` is four machine words: a pointer to
//! the closure type's [`Shims`] and three words of payload. A closure that fits the payload (at
//! most [`INLINE_WORDS`] words, alignment at most that of `usize`) is moved into it; any other
//! closure is boxed and the box pointer is stored instead. The shims are monomorphised
//! `unsafe fn`s that know which of the two they are looking at: one runs the closure (which
//! consumes it), one only drops it, and one runs it with what a drain knows (for fallible and
//! outcome-aware closures). Keeping them behind one `&'static` pointer costs a slot one word,
//! and saves the run path a test of which to do.
//!
//! Ownership protocol: a `Slot` owns its closure until it is consumed, exactly once, by
//! [`Detached`]. `Slot` has no `Drop` impl on purpose: the [`Scope`](crate::Scope) decides when
//! and in which order slots are consumed, and a slot that is never consumed leaks its closure
//! (safe, like `mem::forget`).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::ptr::NonNull;

use smallvec::SmallVec;

use crate::deferred::{Deferred, DrainContext};

/// Payload words stored inline; larger closures are boxed.
const INLINE_WORDS: usize = 3;

type Payload = MaybeUninit<[usize; INLINE_WORDS]>;

/// What consuming a slot does with its closure.
#[derive(Clone, Copy)]
enum Mode {
    /// Run the closure (which drops its captures when it returns or unwinds).
    Run,
    /// Drop the closure's captures without running it.
    Discard,
    /// Let the closure see how the scope ended and report its error.
    ///
    /// Invariant: points to a context that outlives the [`Detached`] holding this mode, and
    /// that nothing else accesses while it is consumed.
    RunIn(NonNull<DrainContext>),
}

/// How to consume the closure stored in a payload, one table per closure type and storage.
struct Shims {
    run: unsafe fn(*mut Payload),
    discard: unsafe fn(*mut Payload),
    run_in: unsafe fn(*mut Payload, &mut DrainContext),
}

/// The shims of an inline closure of type `D`.
struct Inline<D>(PhantomData<D>);

impl<D: Deferred> Inline<D> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
        run_in: Self::run_in,
    };

    /// # Safety
    /// `payload` must hold a valid `D` written by [`Slot::new`], which this call moves out.
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
}

/// The shims of a boxed closure of type `D`.
struct Boxed<D>(PhantomData<D>);

impl<D: Deferred> Boxed<D> {
    const SHIMS: &'static Shims = &Shims {
        run: Self::run,
        discard: Self::discard,
        run_in: Self::run_in,
    };

    /// # Safety
    /// `payload` must hold a valid `Box<D>` written by [`Slot::new_boxed`], which this call
    /// moves out.
    unsafe fn run(payload: *mut Payload) {
        // SAFETY: the caller guarantees `payload` holds a `Box<D>` nobody will read again.
        let deferred: Box<D> = unsafe { payload.cast::<Box<D>>().read() };
        deferred.run();
    }

    /// # Safety
    /// As for [`Boxed::run`].
    unsafe fn discard(payload: *mut Payload) {
        // SAFETY: as in `run`.
        unsafe { payload.cast::<Box<D>>().drop_in_place() }
    }

    /// # Safety
    /// As for [`Boxed::run`].
    unsafe fn run_in(payload: *mut Payload, context: &mut DrainContext) {
        // SAFETY: as in `run`.
        let deferred: Box<D> = unsafe { payload.cast::<Box<D>>().read() };
        deferred.run_in(context);
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
    const fn is_inline<F>() -> bool {
        mem::size_of::<F>() <= mem::size_of::<Payload>()
            && mem::align_of::<F>() <= mem::align_of::<Payload>()
    }

    /// Erases `deferred`. Allocates exactly once if it does not fit inline, never otherwise.
    #[inline(always)]
    pub(crate) fn new<D: Deferred + 'env>(deferred: D) -> Self {
        if Self::is_inline::<D>() {
            let mut payload = Payload::uninit();
            // SAFETY: `is_inline` checked that `D` fits the payload's size and alignment, and
            // `payload` is a local we own. `Inline::<D>`'s shims read back exactly this `D`.
            unsafe { payload.as_mut_ptr().cast::<D>().write(deferred) };
            Slot {
                shims: Inline::<D>::SHIMS,
                payload,
                _closure: PhantomData,
            }
        } else {
            Self::new_boxed(deferred)
        }
    }

    #[cold]
    #[inline(never)]
    fn new_boxed<D: Deferred + 'env>(deferred: D) -> Self {
        const { assert!(Self::is_inline::<Box<()>>()) };
        let mut payload = Payload::uninit();
        // SAFETY: a `Box<D>` of a sized `D` is one pointer, which fits the payload (checked at
        // compile time above). `Boxed::<D>`'s shims read back exactly this `Box<D>`.
        unsafe {
            payload
                .as_mut_ptr()
                .cast::<Box<D>>()
                .write(Box::new(deferred))
        };
        Slot {
            shims: Boxed::<D>::SHIMS,
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
    unsafe fn consume_in_place(slot: *mut Self, mode: Mode) {
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
}

/// Marks, in [`Arena::len`]'s word, that slot 0 holds the scope's extras.
const EXTRAS: usize = 1 << (usize::BITS - 1);

/// Never called: the shims of the slot that holds the extras, which no drain consumes.
static EXTRAS_SHIMS: Shims = Shims {
    run: unreachable_shim,
    discard: unreachable_shim,
    run_in: unreachable_run_in,
};

fn unreachable_shim(_: *mut Payload) {
    unreachable!("the extras slot is never consumed as a closure")
}

fn unreachable_run_in(_: *mut Payload, _: &mut DrainContext) {
    unreachable!("the extras slot is never consumed as a closure")
}

/// The pending closures of one scope, in registration order, and optionally a boxed `X` with
/// what only some scopes need (limits, stats, error handling).
///
/// The `X` lives in slot 0, flagged by the high bit of `len`, rather than in a field of its
/// own: that keeps a `Scope<'_, 8>` at 34 words, and makes every scope that has one fail the
/// fast path's length check (the flag makes `len` huge) without a test of its own.
pub(crate) struct Arena<'env, const N: usize, X> {
    /// Storage only. Its own length stays zero, so it never reads, moves or drops a slot by
    /// itself (and, with no length to keep in sync, `push` touches one counter, not two).
    slots: SmallVec<[Slot<'env>; N]>,
    /// Invariant: with `count = len & !EXTRAS`, `slots.as_ptr()[..count]` are initialised;
    /// `count <= slots.capacity()`. Without `EXTRAS` each owns a closure that has been neither
    /// run nor dropped; with it, slot 0's payload is instead a `Box<X>` from `Box::into_raw`
    /// (owned by the arena), and the closures are the slots after it.
    len: usize,
    _extras: PhantomData<Option<Box<X>>>,
}

impl<'env, const N: usize, X> Arena<'env, N, X> {
    /// Not `const` on purpose: `SmallVec::new_const` hands LLVM an uninitialised constant that
    /// it materialises with a memset of the whole inline buffer (264 bytes for `N = 8`, ~40
    /// instructions) on every scope creation; `SmallVec::new` compiles to one store.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Arena {
            slots: SmallVec::new(),
            len: 0,
            _extras: PhantomData,
        }
    }

    /// Pushes `deferred`. When the arena is full or has extras, `admit` is called first
    /// (to enforce a limit: it may panic, leaving the arena unchanged).
    #[inline(always)]
    pub(crate) fn push<D: Deferred + 'env>(&mut self, deferred: D, admit: impl FnOnce(&Self)) {
        let len = self.len;
        // Branch on the storage rather than letting `as_mut_ptr` select between the inline
        // and heap pointers: a select loads the heap-pointer field even while inline, and
        // that field shares its bytes with the first inline slot, which the previous push may
        // have just written at an address the CPU had not resolved yet. Mispredicted memory
        // ordering there (a pipeline flush) made every push of an inline scope ~2.5x slower.
        // A set `EXTRAS` flag makes `len` fail both fast-path tests.
        if self.slots.spilled() {
            if len < self.slots.capacity() {
                // SAFETY: `len < capacity` and no flag: the first free slot.
                unsafe { self.slots.as_mut_ptr().add(len).write(Slot::new(deferred)) };
            } else {
                self.push_slow(deferred, admit);
            }
        } else if len < N {
            // SAFETY: `len < N`, the inline capacity, and no flag: the first free slot.
            unsafe { self.slots.as_mut_ptr().add(len).write(Slot::new(deferred)) };
        } else {
            self.push_slow(deferred, admit);
        }
        // The flag, if any, is unchanged by the increment.
        self.len = len + 1;
    }

    /// Writes `deferred` once `admit` agrees, growing the storage first if it is full; leaves
    /// the length to the caller.
    #[cold]
    #[inline(never)]
    fn push_slow<D: Deferred + 'env>(&mut self, deferred: D, admit: impl FnOnce(&Self)) {
        admit(self);
        let (base, index) = self.make_room();
        // SAFETY: `make_room` made room at `index`.
        unsafe { base.add(index).write(Slot::new(deferred)) };
    }

    /// Grows the storage if it is full; returns the buffer and the first free index.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self) -> (*mut Slot<'env>, usize) {
        let count = self.len & !EXTRAS;
        if count == self.slots.capacity() {
            self.grow();
        }
        (self.slots.as_mut_ptr(), count)
    }

    fn push_slot(&mut self, slot: Slot<'env>) {
        let (base, index) = self.make_room();
        // SAFETY: `make_room` made room at `index`, which the new length covers.
        unsafe { base.add(index).write(slot) };
        self.len += 1;
    }

    /// Doubles the capacity, moving the stack to the heap the first time.
    fn grow(&mut self) {
        // SAFETY: the first `count` slots are initialised, so the vector may copy them to the
        // new buffer. `Slot` has no drop glue, so even if `reserve` panics with the length
        // set, the vector cannot drop a closure.
        unsafe { self.slots.set_len(self.len & !EXTRAS) };
        self.slots.reserve(1);
        // SAFETY: back to storage only; `self.len` still counts the (moved) slots.
        unsafe { self.slots.set_len(0) };
    }

    /// The index of the first closure: 1 if slot 0 holds the extras.
    #[inline(always)]
    fn first(&self) -> usize {
        self.len >> (usize::BITS - 1)
    }

    /// The number of pending closures.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        (self.len & !EXTRAS) - self.first()
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity() - self.first()
    }

    #[inline(always)]
    pub(crate) fn spilled(&self) -> bool {
        self.slots.spilled()
    }

    /// Bytes of heap the slots occupy: zero while inline.
    pub(crate) fn heap_bytes(&self) -> usize {
        if self.spilled() {
            self.slots.capacity() * mem::size_of::<Slot<'env>>()
        } else {
            0
        }
    }

    /// The extras, if any.
    #[inline]
    pub(crate) fn extras(&self) -> Option<&X> {
        if self.len & EXTRAS == 0 {
            return None;
        }
        // SAFETY: by the invariant slot 0's payload holds a `Box<X>` pointer we own; the
        // returned borrow is tied to `&self`.
        Some(unsafe { &*self.extras_ptr() })
    }

    /// The extras, if any.
    #[inline]
    pub(crate) fn extras_mut(&mut self) -> Option<&mut X> {
        if self.len & EXTRAS == 0 {
            return None;
        }
        // SAFETY: as in `extras`, borrowed through `&mut self`.
        Some(unsafe { &mut *self.extras_ptr() })
    }

    /// # Safety
    /// The arena must have extras.
    unsafe fn extras_ptr(&self) -> *mut X {
        // SAFETY: the caller guarantees slot 0 is initialised and its payload's first word is
        // the `Box<X>` pointer written by `set_extras`.
        unsafe {
            (&raw const (*self.slots.as_ptr()).payload)
                .cast::<*mut X>()
                .read()
        }
    }

    /// Whether the arena has extras: one bit test, for the hot paths.
    #[inline(always)]
    pub(crate) fn has_extras(&self) -> bool {
        self.len & EXTRAS != 0
    }

    /// Gives the arena extras, replacing any it had. Moves the pending closures up one slot
    /// the first time (rare: scopes usually get their extras before any closure).
    pub(crate) fn set_extras(&mut self, extras: Box<X>) {
        if self.len & EXTRAS != 0 {
            // SAFETY: the arena has extras; the new box replaces the old one, which is dropped.
            unsafe {
                drop(Box::from_raw(mem::replace(
                    &mut *self.extras_slot_payload(),
                    Box::into_raw(extras),
                )))
            };
            return;
        }
        let count = self.len;
        if count == self.slots.capacity() {
            self.grow();
        }
        let mut payload = Payload::uninit();
        // SAFETY: a pointer fits the payload's first word.
        unsafe {
            payload
                .as_mut_ptr()
                .cast::<*mut X>()
                .write(Box::into_raw(extras))
        };
        let slot = Slot {
            shims: &EXTRAS_SHIMS,
            payload,
            _closure: PhantomData,
        };
        // SAFETY: `count < capacity`, so moving the `count` initialised slots up by one stays
        // in bounds; slot 0, now free, receives the extras.
        unsafe {
            let base = self.slots.as_mut_ptr();
            core::ptr::copy(base, base.add(1), count);
            base.write(slot);
        }
        self.len = (count + 1) | EXTRAS;
    }

    /// # Safety
    /// The arena must have extras.
    unsafe fn extras_slot_payload(&mut self) -> *mut *mut X {
        // SAFETY: the caller guarantees slot 0 is initialised.
        unsafe { (&raw mut (*self.slots.as_mut_ptr()).payload).cast::<*mut X>() }
    }

    /// Moves every pending closure into a new arena without extras, leaving this one with its
    /// extras (if any) and no closures.
    pub(crate) fn take(&mut self) -> Self {
        if self.len & EXTRAS == 0 {
            return mem::replace(self, Self::new());
        }
        let mut taken = Self::new();
        let count = self.len & !EXTRAS;
        self.len = EXTRAS | 1;
        for index in 1..count {
            // SAFETY: slots `1..count` were initialised closures; with the length reset just
            // above, this arena no longer owns them, and each is moved out exactly once.
            taken.push_slot(unsafe { self.slots.as_mut_ptr().add(index).read() });
        }
        taken
    }

    /// Runs every pending closure, last first. If one panics, the others still run (their
    /// panics are dropped) and the first panic resumes.
    #[inline(always)]
    pub(crate) fn run_all(&mut self) {
        self.detach(Mode::Run).consume_all();
    }

    /// Drops every pending closure, last first, without running it; a panicking drop does not
    /// stop the others.
    #[inline(always)]
    pub(crate) fn discard_all(&mut self) {
        self.detach(Mode::Discard).consume_all();
    }

    /// Runs every pending closure, last first, with `context`, catching every panic: the first
    /// payload is returned, later ones are dropped; `context.panics` counts them all.
    #[cfg(feature = "std")]
    pub(crate) fn run_all_caught_in(
        &mut self,
        context: &mut DrainContext,
    ) -> Option<Box<dyn core::any::Any + Send>> {
        let mode = Mode::RunIn(NonNull::from(&mut *context));
        // `context` is only reached through `mode` until `detached` is gone.
        let detached = self.detach(mode);
        let (first, caught) = detached.consume_all_caught();
        context.panics += caught;
        first
    }

    /// Like [`Arena::run_all_caught_in`] without `std`: the first panic propagates once
    /// every closure ran, and a second one aborts.
    #[cfg(not(feature = "std"))]
    pub(crate) fn run_all_in(&mut self, context: &mut DrainContext) {
        let mode = Mode::RunIn(NonNull::from(&mut *context));
        self.detach(mode).consume_all();
    }

    /// Runs every pending closure, last first, catching and dropping every panic: for a scope
    /// dropped while its thread is already unwinding.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn run_all_caught(&mut self) {
        let (first, _) = self.detach(Mode::Run).consume_all_caught();
        if let Some(payload) = first {
            drop_payload(payload);
        }
    }

    /// Hands every pending closure to a [`Detached`] and leaves the arena without closures
    /// but with its storage (and extras).
    #[inline(always)]
    fn detach(&mut self, mode: Mode) -> Detached<'_, 'env> {
        if self.len & EXTRAS == 0 {
            let count = mem::take(&mut self.len);
            // SAFETY: with the length zero, the arena will neither read nor drop the `count`
            // initialised closures behind `as_mut_ptr()`, which stay valid and unaliased while
            // `self` is mutably borrowed; `Detached` consumes each of them exactly once. A
            // `Mode::RunIn` context is borrowed by the caller for at least as long.
            unsafe { Detached::new(self.slots.as_mut_ptr(), count, mode) }
        } else {
            self.detach_after_extras(mode)
        }
    }

    /// [`Arena::detach`] for an arena whose slot 0 holds the extras, which stay.
    #[cold]
    fn detach_after_extras(&mut self, mode: Mode) -> Detached<'_, 'env> {
        let count = mem::replace(&mut self.len, EXTRAS | 1) & !EXTRAS;
        // SAFETY: as in `detach`, for the closures in `1..count`; the length now covers only
        // the extras slot.
        unsafe { Detached::new(self.slots.as_mut_ptr().add(1), count - 1, mode) }
    }
}

impl<const N: usize, X> Drop for Arena<'_, N, X> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.len & EXTRAS != 0 {
            self.drop_extras();
        }
    }
}

impl<const N: usize, X> Arena<'_, N, X> {
    /// Out of line, so that dropping an arena without extras saves no registers.
    #[cold]
    #[inline(never)]
    fn drop_extras(&mut self) {
        // SAFETY: the arena has extras, owned by it and dropped only here (`Drop`).
        unsafe { drop(Box::from_raw(*self.extras_slot_payload())) };
    }
}

/// Consumes slots that have been detached from their vector, last first, and keeps going
/// if one of them panics.
///
/// The hot path ([`Detached::consume_all`]) has no `catch_unwind`: if a closure panics, the
/// unwinding drops this value, and its [`Drop`] consumes the remaining slots with every further
/// panic caught, so the first payload is the one that keeps unwinding.
struct Detached<'a, 'env> {
    /// Invariant: `base..end` are initialised slots that nothing else will consume.
    base: *mut Slot<'env>,
    end: *mut Slot<'env>,
    mode: Mode,
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
    unsafe fn new(base: *mut Slot<'env>, len: usize, mode: Mode) -> Self {
        // SAFETY: the caller guarantees `base[..len]` lies in one allocation.
        let end = unsafe { base.add(len) };
        Detached {
            base,
            end,
            mode,
            _slots: PhantomData,
        }
    }

    /// Consumes every slot, last first. Panics with the first closure's payload if one
    /// panicked, after all the others have been consumed.
    #[inline(always)]
    fn consume_all(mut self) {
        let (base, mode) = (self.base, self.mode);
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
                Slot::consume_in_place(self.end, mode);
            }
            if self.end == base {
                break;
            }
        }
        // Nothing is left for the drop guard to finish.
        mem::forget(self);
    }

    /// Consumes every slot, last first, catching every panic. Returns the first payload and
    /// the number of panics; later payloads are dropped.
    #[cfg(feature = "std")]
    #[cold]
    fn consume_all_caught(mut self) -> (Option<Box<dyn core::any::Any + Send>>, usize) {
        let mut first = None;
        let mut caught = 0;
        while let Some(slot) = self.pop() {
            let mode = self.mode;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: `pop` handed us sole ownership of this initialised slot.
                unsafe { Slot::consume_in_place(slot, mode) }
            }));
            if let Err(payload) = outcome {
                caught += 1;
                match first {
                    None => first = Some(payload),
                    Some(_) => drop_payload(payload),
                }
            }
        }
        (first, caught)
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
            mode: self.mode,
            _slots: PhantomData,
        };
        #[cfg(feature = "std")]
        {
            let (first, _) = rest.consume_all_caught();
            if let Some(payload) = first {
                drop_payload(payload);
            }
        }
        // Without `std` there is no `catch_unwind`: a second panic aborts, as in `Vec`'s drop.
        #[cfg(not(feature = "std"))]
        rest.consume_all();
    }
}

/// Drops a caught panic payload whose own destructor might panic too.
#[cfg(feature = "std")]
pub(crate) fn drop_payload(mut payload: Box<dyn core::any::Any + Send>) {
    // A destructor that panics hands us the next payload to drop; only a chain that never
    // ends (which no finite program builds on purpose) keeps this loop going.
    while let Err(next) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        payload = next;
    }
}

// SAFETY: a `SendScope` owns a `Scope` that, by `SendScope`'s invariant, holds only `Send`
// closures and a `Send` error handler: every `SendScope` method that stores something requires
// `Send`, and the inner scope is never lent out (only given up by `into_local`). The rest of
// what a scope owns (its storage, the static shim tables, limits, counters) is `Send`, so
// moving it to another thread moves nothing that must stay.
unsafe impl<const N: usize> Send for crate::SendScope<'_, N> {}
