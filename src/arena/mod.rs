//! Type-erased storage for deferred closures whose slots never move: the only module of the
//! crate with `unsafe`.
//!
//! - [`slot`]: one closure, erased to four words (inline, or boxed if it does not fit);
//! - [`segment`]: the heap segments a scope grows into, never moved or resized;
//! - [`drain`]: consuming the slots last first, and going on when a closure panics;
//! - this file: the [`Arena`] that ties them together: `N` inline slots, then the segments,
//!   and the [`Sites`] of the closures when something needs them.
//!
//! Registration goes through `&self`, so that a value held in a slot can be lent out while
//! more closures are registered. That is sound because nothing ever moves or reads a slot
//! that is registered, except a drain, and every drain takes `&mut self`: no lent reference
//! is alive while one runs. Registration cannot be re-entered either: a running closure would
//! need a borrow of its own scope for `'env`, which drop check rules out (the arena has a
//! `Drop` impl, so `'env` strictly outlives it).
//!
//! Aliasing rules followed throughout: the inline slots are reached only through raw pointers
//! derived from [`UnsafeCell::get`], one slot at a time, and never through a reference that
//! covers the whole buffer (which would invalidate the references lent out into it); segment
//! headers are only read and written through raw pointers.

mod drain;
mod segment;
mod slot;

use alloc::boxed::Box;
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::panic::Location;
use core::ptr::NonNull;

#[cfg(feature = "std")]
use crate::deferred::Started;
use crate::deferred::{Deferred, DrainContext};
pub(crate) use drain::drop_quietly;
#[cfg(feature = "std")]
pub(crate) use drain::{Payload, drop_payload};
use drain::{Run, Runs};
use segment::Segment;
use slot::{Mode, Slot};

use crate::sites::{Site, Sites};

/// Marks, in the arena's `used` word, that the arena has extras.
const EXTRAS: usize = 1 << (usize::BITS - 1);

/// Marks, in the arena's `used` word, that the arena holds no closure but keeps segments: so
/// that `used` alone tells whether there is anything to run or free.
const RETAINED: usize = 1 << (usize::BITS - 2);

/// Marks, in the arena's `used` word, that every registration records its line in `sites`
/// (stats or a limit need them): it sends every registration to the slow path, which records.
const TRACKING: usize = 1 << (usize::BITS - 3);

/// Marks, in the arena's `used` word, that slots below the last are vacant (an entry handle
/// consumed their closures), and `vacated` counts them: it sends registrations and drains to
/// the slow paths, which know that the pending closures are fewer than the slots.
const VACATED: usize = 1 << (usize::BITS - 4);

/// Every flag of the `used` word.
const FLAGS: usize = EXTRAS | RETAINED | TRACKING | VACATED;

/// The most closures a scope may hold, so that their byte count stays below the flags: a limit
/// that only a 32-bit target can reach (millions of closures).
const MAX_PENDING: usize = VACATED / SLOT / 2;

// The flags are the four top bits, and the segment that `MAX_PENDING` closures would start
// (as large as everything before it) is the largest that ends below them.
static_assertions::const_assert_eq!(RETAINED, EXTRAS >> 1);
static_assertions::const_assert_eq!(TRACKING, RETAINED >> 1);
static_assertions::const_assert_eq!(VACATED, TRACKING >> 1);
static_assertions::const_assert!(MAX_PENDING * 2 * SLOT <= VACATED);
static_assertions::const_assert!((MAX_PENDING + 1) * 2 * SLOT > VACATED);

/// The bytes of one slot: lengths are kept in bytes, so that a slot's address is a base plus a
/// length, with no multiplication on the hot paths.
const SLOT: usize = mem::size_of::<Slot>();

/// The pending closures of one scope, in registration order, and optionally a boxed `X` with
/// what only some scopes need (limits, stats, error handling).
pub(crate) struct Arena<'env, const N: usize, X> {
    /// The first `N` slots. Invariant: with `count` pending closures (see `used`), slots
    /// `0..min(count, N)` are initialised, and each owns a closure that has been neither run
    /// nor dropped.
    inline: UnsafeCell<[MaybeUninit<Slot>; N]>,
    /// `count * SLOT`, for `count` pending closures, with the `EXTRAS` flag set if `extras` is
    /// set, the `TRACKING` flag if every registration records its line,
    /// set: the flag makes every scope with extras fail both of the fast path's tests, so that
    /// the slow path alone deals with limits, without a test of its own on the fast path. The
    /// `RETAINED` flag is set if `count` is zero and `heap_end` is not (then it too sends the
    /// next registration to the slow path, which clears it).
    ///
    /// Invariant: if `count > N`, `current` holds index `count - 1`, and every slot from `N`
    /// to `count` (across the segments up to `current`) is initialised as above.
    used: Cell<usize>,
    /// Zero if the arena has no segment; otherwise `SLOT` times the index up to which the fast
    /// path may register in `current`: one past its last slot, or the next slot the profile
    /// counts if that comes first (always past the inline slots).
    heap_end: Cell<usize>,
    // The fields below are initialised only when they are needed, so that creating a scope
    // writes two words and dropping an unused one reads one.
    /// Initialised when `heap_end != 0`: where `current`'s slot of index `i` is, for `i` in
    /// its range: `i * SLOT` bytes past `heap_base`, computed with wrapping arithmetic (the
    /// base itself may lie outside the segment).
    heap_base: Cell<MaybeUninit<*mut Slot>>,
    /// Initialised when `heap_end != 0`: the segment being filled; the first one whenever
    /// `count <= N`.
    current: Cell<MaybeUninit<NonNull<Segment>>>,
    /// Initialised exactly when `len` has the `EXTRAS` flag: a `Box::into_raw` pointer that
    /// the arena owns.
    extras: Cell<MaybeUninit<NonNull<X>>>,
    /// Initialised when `used` has the `TRACKING` flag or `heap_end != 0`: the lines of the
    /// pending closures, a `Box::into_raw` pointer that the arena owns, if anything records
    /// them (always, with `TRACKING`). Part of the storage: it moves with the closures.
    sites: Cell<MaybeUninit<Option<NonNull<Sites>>>>,
    /// Initialised exactly when `used` has the `VACATED` flag: how many slots below the last
    /// are vacant (at least one). The last slot is never vacant: consuming it shortens the
    /// storage, down to the closest pending one.
    vacated: Cell<MaybeUninit<usize>>,
    /// The closures may borrow data of `'env` and need not be `Send` or `Sync`. `'env` is
    /// invariant: registration goes through `&self`, and a shared reference that could shorten
    /// `'env` would let a closure borrow data that dies before the arena runs it.
    _closures: PhantomData<(Box<dyn FnOnce() + 'env>, Invariant<'env>)>,
}

/// A marker invariant in `'env`.
type Invariant<'env> = Cell<&'env ()>;

/// Where [`Arena::push`] stored a closure: a handle that can lend it out once, for as long as
/// the arena is borrowed by the registration, which is how `hold` lends its value.
pub(crate) struct Stored<'a, D> {
    /// Invariant: a closure that this push stored, which nothing else references and which
    /// stays in place until a drain, which needs `&mut` of the arena borrowed for `'a`.
    closure: NonNull<D>,
    /// The slot's index and the arena, for [`Stored::into_entry`].
    index: usize,
    arena: NonNull<()>,
    _arena: PhantomData<&'a mut D>,
}

impl<'a, D> Stored<'a, D> {
    #[inline(always)]
    fn new(closure: NonNull<D>, index: usize, arena: NonNull<()>) -> Self {
        Stored {
            closure,
            index,
            arena,
            _arena: PhantomData,
        }
    }

    /// The stored closure, lent out for as long as the arena is borrowed.
    #[inline(always)]
    pub(crate) fn into_mut(self) -> &'a mut D {
        // SAFETY: by the invariant, the closure stays in place, unread and untouched by the
        // arena, until a drain, which cannot happen while `'a` lasts; `self` is consumed, so
        // this is the only reference ever made to it.
        unsafe { &mut *self.closure.as_ptr() }
    }

    /// The stored closure, lent out for as long as the arena is borrowed, and the claim that
    /// takes it out early ([`Arena::take_entry`]). The closure is lent as a [`Lent`], not a
    /// reference, so that the handle that owns both holds no reference into the slot when
    /// its claim is used.
    #[inline(always)]
    pub(crate) fn into_entry(self) -> (Lent<'a, D>, Claim<'a>) {
        let claim = Claim {
            index: self.index,
            arena: self.arena,
            _arena: PhantomData,
        };
        let lent = Lent {
            closure: self.closure,
            _arena: PhantomData,
        };
        (lent, claim)
    }
}

/// A stored closure (or a part of it) lent out by [`Stored::into_entry`]: a unique pointer
/// that hands out references only while it is itself borrowed, so that none is alive once
/// it is moved into the call that uses its claim.
pub(crate) struct Lent<'a, D> {
    /// Invariant: as `Stored::closure`, and unique: every reference to the closure is made
    /// through this value.
    closure: NonNull<D>,
    _arena: PhantomData<&'a mut D>,
}

// SAFETY: a `Lent` is a unique access to a `D`, like `&mut D`, which is `Send` if `D` is.
unsafe impl<D: Send> Send for Lent<'_, D> {}
// SAFETY: `&Lent` gives only `&D`, like `&&mut D`, which is `Sync` if `D` is.
unsafe impl<D: Sync> Sync for Lent<'_, D> {}

impl<'a, D> Lent<'a, D> {
    /// The part of the closure that `part` picks.
    #[inline(always)]
    pub(crate) fn project<U>(mut self, part: impl FnOnce(&mut D) -> &mut U) -> Lent<'a, U> {
        Lent {
            closure: NonNull::from(part(self.get_mut())),
            _arena: PhantomData,
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> &D {
        // SAFETY: by the invariant the closure stays in place and untouched by the arena while
        // `'a` lasts, and every reference to it is made here, borrowing `self`.
        unsafe { self.closure.as_ref() }
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self) -> &mut D {
        // SAFETY: as in `get`, borrowing `self` mutably.
        unsafe { self.closure.as_mut() }
    }
}

/// The right to consume one pending closure of an arena before the arena's drains: made only
/// by [`Stored::into_entry`], used at most once, and only while the arena stays borrowed for
/// `'a` (so no drain, `take` or `dismiss` can happen meanwhile, and the slot cannot move).
pub(crate) struct Claim<'a> {
    index: usize,
    /// The arena that stored the closure: a claim is checked against it.
    arena: NonNull<()>,
    _arena: PhantomData<&'a ()>,
}

// SAFETY: a claim is an index and an address that is only compared, never dereferenced;
// what a claim may do is decided by `consume_entry`, through the arena the caller has.
unsafe impl Send for Claim<'_> {}
// SAFETY: as above; `&Claim` gives access to nothing.
unsafe impl Sync for Claim<'_> {}

/// What [`Arena::consume_entry`] does with the claimed closure.
#[derive(Clone, Copy)]
pub(crate) enum EntryEnd {
    /// Runs it.
    Run,
    /// Drops it unrun.
    Discard,
}

/// A closure taken out of the arena by [`Arena::take_entry`], to be consumed (dropping it
/// instead leaks the closure, which is safe).
pub(crate) struct Taken<'env> {
    /// Owns its closure (see [`Slot::vacate`]).
    slot: Slot,
    _closure: PhantomData<Box<dyn FnOnce() + 'env>>,
}

impl<'env> Taken<'env> {
    /// Runs or drops the closure. A panic of the closure propagates, with it consumed.
    pub(crate) fn consume(self, end: EntryEnd) {
        self.slot.consume(match end {
            EntryEnd::Run => Mode::Run,
            EntryEnd::Discard => Mode::Discard,
        });
    }

    /// Starts the closure as an async drain would: a sync closure runs, an async cleanup
    /// hands back its future.
    #[cfg(feature = "std")]
    pub(crate) fn start(self, context: &mut DrainContext) -> Option<Started<'env>> {
        // SAFETY: the future's lifetime is put back as `'env`, which every closure the arena
        // stored outlives.
        unsafe { self.slot.start(context) }
    }
}

#[cfg(feature = "std")]
/// What [`Arena::start_last`] did.
pub(crate) enum Step<'env> {
    /// Nothing was pending.
    Done,
    /// A sync closure ran (or an async one was skipped).
    Ran,
    /// An async cleanup was reached: its future is to be awaited.
    Await(Started<'env>),
}

impl<'env, const N: usize, X> Arena<'env, N, X> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Arena {
            inline: UnsafeCell::new([const { MaybeUninit::uninit() }; N]),
            used: Cell::new(0),
            heap_end: Cell::new(0),
            heap_base: Cell::new(MaybeUninit::uninit()),
            current: Cell::new(MaybeUninit::uninit()),
            extras: Cell::new(MaybeUninit::uninit()),
            sites: Cell::new(MaybeUninit::uninit()),
            vacated: Cell::new(MaybeUninit::uninit()),
            _closures: PhantomData,
        }
    }

    /// The first inline slot. A raw pointer derived from the cell, so that writing one slot
    /// asserts nothing about the others (which may be lent out).
    #[inline(always)]
    fn inline_slots(&self) -> *mut Slot {
        self.inline.get().cast::<Slot>()
    }

    /// Registers `deferred`, registered at `site`, and returns where it is stored, which stays
    /// valid until the next drain. When the arena has extras, `room` tells how many more
    /// closures it may take (to enforce a limit; any number for an arena without extras),
    /// asked on the slow path, whose answer holds for the registrations of the same line that
    /// follow until the storage or the limit changes (see [`Arena::forget_room`]). With no
    /// room, `deferred` is dropped, the arena is unchanged, and the result is `None` (a
    /// pointer-sized answer, so that the hot path returns it in a register); `refuse` gets
    /// `deferred` first, to drop it or panic. The site is recorded only on the slow path,
    /// where the arena tracks sites or the profile counts this registration.
    #[inline(always)]
    pub(crate) fn push<D: Deferred + 'env>(
        &self,
        deferred: D,
        site: &'static Location<'static>,
        room: impl FnOnce(&Self) -> usize,
        refuse: impl FnOnce(D),
    ) -> Option<Stored<'_, D>> {
        let used = self.used.get();
        // Inline first, without looking at the heap fields: a scope that stays inline never
        // loads them. A set flag makes `used` fail both tests.
        if used < N * SLOT {
            // SAFETY: the first free slot, within the inline array (the invariant covers only
            // the slots before it), to which no reference exists; the new length makes the
            // arena its owner.
            let stored = unsafe { Slot::write(self.inline_slots().byte_add(used), deferred) };
            // SAFETY: `used < N * SLOT`, the size of a field: no overflow. (Telling the
            // compiler lets a caller's drop skip its test for an empty scope.)
            self.used.set(unsafe { used.unchecked_add(SLOT) });
            return Some(Stored::new(stored, used / SLOT, self.address()));
        }
        let (slot, used) = if used < self.heap_end.get() {
            // In `current`'s range, where the slot is in bounds.
            (self.heap_base().wrapping_byte_add(used), used)
        } else {
            // The slow paths hand back the length they leave, so that a caller registering in
            // a loop keeps it in a register rather than reading it back. Without flags, there
            // are no extras, so nothing to admit.
            let reserved = if used & FLAGS == 0 {
                self.reserve_untracked(site)
            } else {
                self.reserve_slow(site, room)
            };
            match reserved {
                Some((slot, used)) => (slot.as_ptr(), used),
                None => {
                    refuse(deferred);
                    return None;
                }
            }
        };
        // SAFETY: as above, in a segment or inline.
        let stored = unsafe { Slot::write(slot, deferred) };
        // SAFETY: the byte count is below the flags (see `MAX_PENDING`), `RETAINED` is clear,
        // and the flags above the count only ever stay as they are: no overflow.
        self.used.set(unsafe { used.unchecked_add(SLOT) });
        Some(Stored::new(stored, (used & !FLAGS) / SLOT, self.address()))
    }

    /// For a storage with a flag set: asks `room`, then finds the first free slot, entering or
    /// adding a segment if needed, and records `site` if anything needs it; returns the slot
    /// with `used` as it must be before the increment (without `RETAINED`). A dispatcher that
    /// needs no stack frame: a tracked storage's next registration from the line of the last
    /// (a pile-up, the common case of a scope with stats or a limit), within the room the
    /// last one saw, is answered here; the rest goes on to a function that does more.
    #[cold]
    #[inline(never)]
    fn reserve_slow(
        &self,
        site: &'static Location<'static>,
        room: impl FnOnce(&Self) -> usize,
    ) -> Option<(NonNull<Slot>, usize)> {
        if let Some(slot) = self.tracked_slot(site) {
            debug_assert!(room(self) > 0, "the fast path went past the limit");
            return Some((slot, self.used.get()));
        }
        self.reserve_recorded(site, room)
    }

    /// [`Arena::reserve_slow`] for a storage with no flag set: the growth of a plain storage,
    /// and a pile-up under the exact profile, come first, each with a few tests. (`RETAINED`
    /// is clear: the slot is in `current`, or inline with no segment kept or slots pending.)
    #[cold]
    #[inline(never)]
    fn reserve_untracked(
        &self,
        site: &'static Location<'static>,
    ) -> Option<(NonNull<Slot>, usize)> {
        let used = self.used.get();
        if used >= self.current_end() {
            if !self.profiles() {
                // No line to record: the storage grows, and that is all.
                return Some((self.free_slot(used / SLOT), used));
            }
        } else {
            // Within `current`, past a bound that the profile set.
            #[cfg(feature = "std")]
            if let Some(slot) = self.counted_slot(site) {
                return Some((slot, used));
            }
        }
        self.reserve_recorded(site, |_| usize::MAX)
    }

    /// [`Arena::reserve_slow`] past its short paths: asks `room`, then takes the first free
    /// slot and records `site` if anything needs it.
    #[inline(never)]
    fn reserve_recorded(
        &self,
        site: &'static Location<'static>,
        room: impl FnOnce(&Self) -> usize,
    ) -> Option<(NonNull<Slot>, usize)> {
        let room = room(self);
        if room == 0 {
            return None;
        }
        let count = self.slots();
        let slot = self.free_slot(count);
        // Bounds the fast path again if the profile counts slots here.
        self.record(count, site);
        // `EXTRAS`, if set, is unchanged by the coming increment; `RETAINED` no longer applies.
        let used = self.used.get() & !RETAINED;
        if used & TRACKING != 0 {
            self.bound_tracked(count, room, used, site);
        }
        Some((slot, used))
    }

    /// After a tracked registration at slot `count` from `site`, with `room` closures admitted
    /// then (that one among them) and `used` before its increment: lets the next registrations
    /// from the same line take their slots on the fast path, as far as the slots at hand
    /// (inline, or in `current`) and the room go, while the profile does not count here.
    fn bound_tracked(
        &self,
        count: usize,
        room: usize,
        used: usize,
        site: &'static Location<'static>,
    ) {
        let slots_end = if count < N {
            N * SLOT
        } else {
            // `current`'s end: a tracked storage's bound is never cut short.
            self.heap_end.get()
        };
        // SAFETY: as in `sites_mut`; the reference ends here.
        let sites = unsafe { &mut *self.tracked_sites().as_ptr() };
        #[cfg(feature = "std")]
        if sites.next_sample != crate::sites::NOT_COUNTING {
            // A bound from before the profile began to count here does not apply.
            sites.fast_end = 0;
            return;
        }
        sites.fast_end = slots_end.min(count.saturating_add(room).saturating_mul(SLOT));
        sites.fast_flags = used & FLAGS;
        sites.fast_line = Some(site);
    }

    /// Makes the next registration ask for room again: the limit changed, or the storage
    /// moved to another scope.
    pub(crate) fn forget_room(&self) {
        if let Some(sites) = self.sites_ptr() {
            // SAFETY: as in `sites_mut`; the reference ends here.
            unsafe { &mut *sites.as_ptr() }.fast_end = 0;
        }
    }

    /// The first free slot of a storage that records every line, if registering there takes
    /// nothing but the slot: within the bound the last registration set (see
    /// [`Arena::bound_tracked`]), for `site` (a pile-up, or any run of one line). The common
    /// case of a scope with stats or a limit. The profile is not asked: the bound was set
    /// while it did not count here, and if it starts now, it counts from the next registration
    /// past the bound, at the latest at the next growth, as it counts a plain storage.
    #[inline(always)]
    fn tracked_slot(&self, site: &'static Location<'static>) -> Option<NonNull<Slot>> {
        let used = self.used.get();
        if used & TRACKING == 0 {
            return None;
        }
        // SAFETY: as in `sites_mut`; the reference ends here.
        let sites = unsafe { self.tracked_sites().as_ref() };
        // The byte count, if the flags are those the bound was set for.
        let bytes = used ^ sites.fast_flags;
        if bytes >= sites.fast_end || !sites.on_fast_line(site) {
            return None;
        }
        let slot = if bytes < N * SLOT {
            // SAFETY: within the inline array.
            unsafe { self.inline_slots().byte_add(bytes) }
        } else if bytes < self.heap_end.get() {
            // In `current`'s range (which `heap_end` does not cut short while tracking). The
            // bound says so too: this test keeps memory safety independent of it.
            self.heap_base().wrapping_byte_add(bytes)
        } else {
            return None;
        };
        // SAFETY: in the inline array or `current`, which are never null.
        Some(unsafe { NonNull::new_unchecked(slot) })
    }

    /// The first free slot, if the exact profile counts it and registering there takes nothing
    /// but the slot and one more count for the line of the last one: a pile-up in a scope
    /// without stats or a limit while [`profile::enable`](crate::profile::enable) is on.
    /// Called only with no flag set (see `reserve_untracked`): untracked, with slots pending.
    #[cfg(feature = "std")]
    #[inline(always)]
    fn counted_slot(&self, site: &'static Location<'static>) -> Option<NonNull<Slot>> {
        let bytes = self.used.get();
        debug_assert_eq!(bytes & FLAGS, 0);
        // Past the inline slots too: the profile counts only slots from `N` on, so
        // `count_again` refuses any before.
        // Zero without a segment.
        let end = self.current_end();
        if bytes >= end {
            return None;
        }
        // SAFETY: there is a segment, so the field is initialised.
        let sites = unsafe { self.sites.get().assume_init() }?;
        // SAFETY: as in `sites_mut`; the reference ends here.
        if !unsafe { &mut *sites.as_ptr() }.count_again(bytes / SLOT, site) {
            return None;
        }
        // The next slot is counted too: the fast path must not take it.
        self.heap_end.set(end.min(bytes + SLOT));
        // SAFETY: `bytes` is in `current`'s range (tested above), which is never null.
        Some(unsafe { NonNull::new_unchecked(self.heap_base().wrapping_byte_add(bytes)) })
    }

    /// The slot of index `count`, the first free one, entering the next segment (or adding
    /// one) if `current` is full. The fast path may then fill the segment: the caller records
    /// the slot, which bounds it again if the profile counts slots here.
    #[inline(always)]
    fn free_slot(&self, count: usize) -> NonNull<Slot> {
        if count < N {
            // SAFETY: within the inline array, which is never null.
            return unsafe { NonNull::new_unchecked(self.inline_slots().add(count)) };
        }
        let end = self.current_end();
        if count * SLOT < end {
            // Past a bound that the profile set: lifted, as it may have been turned off.
            self.heap_end.set(end);
        } else {
            // `current` is full, or there is no segment yet (then `count == N`). The next
            // segment, as large as everything before it, must end below the flags of `used`.
            assert!(
                count < MAX_PENDING,
                "a scope holds at most {MAX_PENDING} pending closures"
            );
            let next = match self.current() {
                // SAFETY: `current` is live; a kept segment after it starts at `count`.
                Some(current) => unsafe { Segment::header(current) }
                    .next
                    .unwrap_or_else(|| Segment::new(count, Some(current))),
                None => {
                    if self.used.get() & TRACKING == 0 {
                        // `heap_end` is about to become nonzero: the field must be initialised.
                        self.sites.set(MaybeUninit::new(None));
                    }
                    Segment::new(count, None)
                }
            };
            self.enter(next, false);
        }
        // SAFETY: in `current`'s range, which is never null.
        unsafe { NonNull::new_unchecked(self.heap_base().wrapping_byte_add(count * SLOT)) }
    }

    /// See the field.
    #[inline(always)]
    fn heap_base(&self) -> *mut Slot {
        debug_assert!(self.heap_end.get() != 0);
        // SAFETY: only called with a segment, when the field is initialised.
        unsafe { self.heap_base.get().assume_init() }
    }

    /// The segment being filled, if there is any.
    fn current(&self) -> Option<NonNull<Segment>> {
        // SAFETY: initialised whenever `heap_end != 0`.
        (self.heap_end.get() != 0).then(|| unsafe { self.current.get().assume_init() })
    }

    /// The pointer to the extras, if there are any.
    #[inline(always)]
    fn extras_ptr(&self) -> Option<NonNull<X>> {
        // SAFETY: initialised whenever the flag is set.
        self.has_extras()
            .then(|| unsafe { self.extras.get().assume_init() })
    }

    /// Makes `segment` the one being filled, with the fast path's bound at its end, or where
    /// [`Arena::bound_heap`] puts it if `bound` (registration bounds it when it records).
    fn enter(&self, segment: NonNull<Segment>, bound: bool) {
        // SAFETY: the arena's segments are live until it is dropped.
        let Segment {
            start, capacity, ..
        } = unsafe { Segment::header(segment) };
        self.current.set(MaybeUninit::new(segment));
        // SAFETY: as above.
        let slots = unsafe { Segment::slots(segment) };
        self.heap_base
            .set(MaybeUninit::new(slots.wrapping_byte_sub(start * SLOT)));
        let end = (start + capacity) * SLOT;
        if bound {
            self.bound_heap(end);
        } else {
            self.heap_end.set(end);
        }
    }

    /// Sets `heap_end` to `end`, `current`'s end, or earlier if the profile needs to see a
    /// registration before: the next slot it counts, or, while the profile is on and counts
    /// nothing here yet, the slot after the first past the inline ones, where it begins. (Not
    /// the first: `heap_end` must stay past the inline slots for the drains' tests.)
    fn bound_heap(&self, end: usize) {
        #[cfg(feature = "std")]
        let end = {
            let next = match self.sites_ptr() {
                // SAFETY: the arena owns the box, and no reference to it is alive (see
                // `sites_mut`).
                Some(sites) => unsafe { sites.as_ref() }.next_sample,
                None => crate::sites::NOT_COUNTING,
            };
            if self.used.get() & TRACKING != 0 {
                // Every registration takes the slow path anyway.
                end
            } else if next != crate::sites::NOT_COUNTING {
                end.min(next.saturating_mul(SLOT))
            } else if crate::profile::period() != 0 {
                end.min((N + 1) * SLOT)
            } else {
                end
            }
        };
        self.heap_end.set(end);
    }

    /// One past `current`'s last slot, in bytes; zero without a segment.
    fn current_end(&self) -> usize {
        self.current().map_or(0, |current| {
            // SAFETY: the arena's segments are live until it is dropped.
            let header = unsafe { Segment::header(current) };
            (header.start + header.capacity) * SLOT
        })
    }

    /// The arena's first segment, if any.
    fn first_segment(&self) -> Option<NonNull<Segment>> {
        let mut segment = self.current()?;
        // SAFETY: the arena's segments are live until it is dropped.
        while let Some(prev) = unsafe { Segment::header(segment) }.prev {
            segment = prev;
        }
        Some(segment)
    }

    /// Every segment's capacity, first to last.
    fn segment_capacities(&self) -> impl Iterator<Item = usize> + '_ {
        let mut next = self.first_segment();
        core::iter::from_fn(move || {
            // SAFETY: the arena's segments are live until it is dropped.
            let header = unsafe { Segment::header(next?) };
            next = header.next;
            Some(header.capacity)
        })
    }

    /// The sites box, if there is one.
    #[inline(always)]
    fn sites_ptr(&self) -> Option<NonNull<Sites>> {
        if self.used.get() & TRACKING == 0 && self.heap_end.get() == 0 {
            return None;
        }
        // SAFETY: initialised whenever the flag is set or there is a segment.
        unsafe { self.sites.get().assume_init() }
    }

    /// The sites, created if the arena has none yet. Reached through `&self` by registration,
    /// which no other use of the box overlaps: every other access is within one method of the
    /// arena that neither registers nor hands out a reference to the box.
    #[allow(clippy::mut_from_ref)]
    fn sites_mut(&self) -> &mut Sites {
        let sites = self.sites_ptr().unwrap_or_else(|| {
            let sites = NonNull::from(Box::leak(Box::new(Sites::new())));
            self.sites.set(MaybeUninit::new(Some(sites)));
            sites
        });
        // SAFETY: a live box that the arena owns; no other reference to it is alive (above).
        unsafe { &mut *sites.as_ptr() }
    }

    /// The sites box of a storage that tracks every line (`TRACKING` set), which always has
    /// one: without the test of `sites_ptr` or the creation of `sites_mut`.
    #[inline(always)]
    fn tracked_sites(&self) -> NonNull<Sites> {
        debug_assert!(self.used.get() & TRACKING != 0);
        // SAFETY: with `TRACKING` the field is initialised and the box exists.
        unsafe { self.sites.get().assume_init().unwrap_unchecked() }
    }

    /// Records that slot `index`, the last, was registered at `site`: for every slot while
    /// tracking, and for the slots the profile counts past the inline ones. Called on the
    /// slow path only, which the profile makes sure to reach at every slot it counts.
    #[inline(always)]
    fn record(&self, index: usize, site: &'static Location<'static>) {
        let tracking = self.used.get() & TRACKING != 0;
        #[cfg(feature = "std")]
        if index >= N && self.profiles() {
            self.sample(index, site, tracking);
            return;
        }
        if tracking {
            // SAFETY: as in `sites_mut`; the reference ends here.
            unsafe { &mut *self.tracked_sites().as_ptr() }.record(index, Site::Line(site));
        }
    }

    /// Whether the profile may count slots here: it is on, or counted some that are pending.
    /// (Never without `std`, which has no profile.)
    #[inline(always)]
    fn profiles(&self) -> bool {
        #[cfg(feature = "std")]
        return crate::profile::period() != 0
            || self.sites_ptr().is_some_and(|sites| {
                // SAFETY: as in `sites_mut`; the reference ends here.
                unsafe { sites.as_ref() }.next_sample != crate::sites::NOT_COUNTING
            });
        #[cfg(not(feature = "std"))]
        false
    }

    /// [`Arena::record`] for a slot the profile may count.
    #[cfg(feature = "std")]
    fn sample(&self, index: usize, site: &'static Location<'static>, tracking: bool) {
        let sites = self.sites_mut();
        sites.sample(
            index,
            index - self.vacated(),
            site,
            crate::profile::period(),
            tracking,
        );
        if !tracking {
            // Up to the next slot counted, the fast path may register.
            let next = sites.next_sample;
            self.heap_end
                .set(self.current_end().min(next.saturating_mul(SLOT)));
        }
    }

    /// Forgets the sites of every pending closure, about to leave the arena: the profile stops
    /// counting them. The drains call this first, the async one too, so that each of its steps
    /// ([`Arena::start_last`]) needs no look at the sites.
    #[inline]
    pub(crate) fn forget_all_sites(&self) {
        let Some(sites) = self.sites_ptr() else {
            return;
        };
        // SAFETY: as in `sites_mut`.
        unsafe { &mut *sites.as_ptr() }.consumed(0, self.slots());
        if self.spilled() {
            // Nothing is counted any more: the fast path may fill the segment again.
            self.bound_heap(self.current_end());
        }
    }

    /// Tells `visit` how many pending closures each run of one line holds, first registered
    /// first; the sites stay.
    pub(crate) fn visit_lines(&self, visit: impl FnMut(&'static Location<'static>, usize)) {
        if let Some(sites) = self.sites_ptr() {
            // SAFETY: as in `sites_mut`; the reference ends here, and `visit` cannot reach
            // the arena's sites (it gets no arena).
            unsafe { sites.as_ref() }.lines(self.slots(), visit);
        }
    }

    /// Begins recording the line of every registration, putting down the pending closures
    /// whose line is unknown to `site`.
    pub(crate) fn start_tracking(&mut self, site: &'static Location<'static>) {
        if self.used.get() & TRACKING != 0 {
            return;
        }
        let slots = self.slots();
        self.sites_mut().start_tracking(slots, site);
        // Every registration now takes the slow path, so no profile bound is needed. (Set
        // before the vacant slots are marked: with it, the sites are always there.)
        self.used.set(self.used.get() | TRACKING);
        self.mark_vacant_sites();
    }

    /// How many pending closures each known line registered, in order of first registration.
    pub(crate) fn pending_by_line(&self) -> alloc::vec::Vec<(&'static Location<'static>, usize)> {
        match self.sites_ptr() {
            // SAFETY: as in `sites_mut`; the reference ends with this call.
            Some(sites) => unsafe { sites.as_ref() }.by_line(self.slots()),
            None => alloc::vec::Vec::new(),
        }
    }

    /// The number of pending closures.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.slots() - self.vacated()
    }

    /// The number of slots in use: the pending closures and the vacant slots among them.
    #[inline(always)]
    fn slots(&self) -> usize {
        (self.used.get() & !FLAGS) / SLOT
    }

    /// The number of vacant slots.
    #[inline(always)]
    fn vacated(&self) -> usize {
        if self.used.get() & VACATED == 0 {
            0
        } else {
            // SAFETY: initialised whenever the flag is set.
            unsafe { self.vacated.get().assume_init() }
        }
    }

    /// Sets the number of vacant slots, and the flag that says there are some.
    fn set_vacated(&self, count: usize) {
        self.vacated.set(MaybeUninit::new(count));
        let used = self.used.get() & !VACATED;
        self.used
            .set(if count == 0 { used } else { used | VACATED });
    }

    /// The arena's address, which identifies it while it is borrowed.
    #[inline(always)]
    fn address(&self) -> NonNull<()> {
        NonNull::from(self).cast()
    }

    /// Slot `index`, below [`Arena::slots`].
    fn slot_at(&self, index: usize) -> *mut Slot {
        if index < N {
            // SAFETY: within the inline array.
            return unsafe { self.inline_slots().add(index) };
        }
        // `current` holds the last slot; the one sought is there or in a segment before.
        let mut segment = self.current().expect("past the inline slots");
        loop {
            // SAFETY: the arena's segments are live until it is dropped.
            let header = unsafe { Segment::header(segment) };
            if header.start <= index {
                // SAFETY: `index` is within the segment, which starts at `header.start`.
                return unsafe { Segment::slots(segment).add(index - header.start) };
            }
            segment = header
                .prev
                .expect("the first segment starts right after the inline slots");
        }
    }

    /// Takes the closure of `claim` out of the arena, ahead of the drains, which pass its
    /// slot by; the caller consumes it (after letting go of anything that must not be held
    /// while user code runs).
    ///
    /// # Panics
    ///
    /// If `claim` was made by another arena (a bug of the caller).
    pub(crate) fn take_entry(&self, claim: Claim<'_>) -> Taken<'env> {
        Taken {
            slot: self.vacate(claim),
            _closure: PhantomData,
        }
    }

    /// The line that registered the closure of `claim`, if the arena records it.
    pub(crate) fn line_of(&self, claim: &Claim<'_>) -> Option<&'static Location<'static>> {
        // SAFETY: as in `sites_mut`; the reference ends here.
        self.sites_ptr()
            .and_then(|sites| unsafe { sites.as_ref() }.line_of(claim.index))
    }

    /// Moves the closure of `claim` out of its slot, which is left vacant, or dropped from the
    /// storage with the vacant slots below it if it was the last.
    fn vacate(&self, claim: Claim<'_>) -> Slot {
        assert!(
            claim.arena == self.address(),
            "an entry consumed through another scope than its own"
        );
        let (index, slots) = (claim.index, self.slots());
        debug_assert!(index < slots);
        // SAFETY: a claim stands for a pending closure of this arena (checked above) that no
        // drain consumed, since the arena stayed borrowed for as long as the claim lived, and
        // that nothing else vacated, since a claim is made once per closure and consumed here.
        // Its owner gave up the closure's borrow before using it.
        let taken = unsafe { Slot::vacate(self.slot_at(index)) };
        if index + 1 == slots {
            self.shorten(index);
        } else {
            self.set_vacated(self.vacated() + 1);
            if let Some(sites) = self.sites_ptr() {
                // SAFETY: as in `sites_mut`; the reference ends here.
                unsafe { &mut *sites.as_ptr() }.vacate(index);
            }
        }
        taken
    }

    /// Drops the last slot, `last`, just vacated, from the storage, with the vacant slots
    /// right below it: the last slot is never vacant.
    fn shorten(&self, last: usize) {
        let (mut kept, mut vacated) = (last, self.vacated());
        // SAFETY: below `last`, with a vacant slot somewhere below while `vacated > 0`.
        while vacated > 0 && unsafe { Slot::is_vacant(self.slot_at(kept - 1)) } {
            kept -= 1;
            vacated -= 1;
        }
        self.set_vacated(vacated);
        if let Some(sites) = self.sites_ptr() {
            // SAFETY: as in `sites_mut`; the reference ends here.
            unsafe { &mut *sites.as_ptr() }.pop(last, kept, N);
        }
        if kept == 0 {
            self.used.set(self.emptied());
        } else {
            self.used
                .set((self.used.get() & (EXTRAS | TRACKING | VACATED)) | (kept * SLOT));
        }
        // By the invariant, `current` holds the last slot, or is the first segment.
        if let Some(mut segment) = self.current() {
            loop {
                // SAFETY: the arena's segments are live until it is dropped.
                let header = unsafe { Segment::header(segment) };
                match header.prev {
                    Some(prev) if header.start >= kept => segment = prev,
                    _ => break,
                }
            }
            // Also bounds the fast path anew, for the profile's next sample.
            self.enter(segment, true);
        }
    }

    /// Marks the vacant slots in the sites, which did not record them (they were vacated
    /// before the sites existed): tracking is about to count every slot's line.
    fn mark_vacant_sites(&self) {
        let (Some(sites), true) = (self.sites_ptr(), self.vacated() > 0) else {
            return;
        };
        let slots = self.slots();
        for index in 0..slots {
            // SAFETY: below `slots`, so initialised.
            if unsafe { Slot::is_vacant(self.slot_at(index)) } {
                // SAFETY: as in `sites_mut`; the reference ends here.
                unsafe { &mut *sites.as_ptr() }.mark_vacant(index);
            }
        }
    }

    /// How many closures can be pending without allocating: the inline slots and every
    /// segment kept.
    pub(crate) fn capacity(&self) -> usize {
        N + self.segment_capacities().sum::<usize>()
    }

    /// Whether the arena holds nothing to run or free: no closure, segment or extras.
    #[inline(always)]
    pub(crate) fn is_unused(&self) -> bool {
        // One word, which a caller that knows it is zero folds away.
        self.used.get() == 0
    }

    /// What `used` is once every closure has left: the `EXTRAS` and `TRACKING` flags as they
    /// were, and `RETAINED` if there are segments.
    fn emptied(&self) -> usize {
        (self.used.get() & (EXTRAS | TRACKING)) | if self.spilled() { RETAINED } else { 0 }
    }

    /// Whether the arena has grown into the heap.
    #[inline(always)]
    pub(crate) fn spilled(&self) -> bool {
        self.heap_end.get() != 0
    }

    /// Bytes of heap the segments occupy: zero while inline.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.segment_capacities().map(Segment::bytes).sum()
    }

    /// Whether the arena has extras: one bit test, for the hot paths.
    #[inline(always)]
    pub(crate) fn has_extras(&self) -> bool {
        self.used.get() & EXTRAS != 0
    }

    /// The extras, if any.
    #[inline]
    pub(crate) fn extras(&self) -> Option<&X> {
        // SAFETY: by the invariant the pointer is a live box that the arena owns; the borrow
        // is tied to `&self`, and `&mut X` is only ever handed out through `&mut self`.
        self.extras_ptr().map(|extras| unsafe { extras.as_ref() })
    }

    /// The extras, if any.
    #[inline]
    pub(crate) fn extras_mut(&mut self) -> Option<&mut X> {
        // SAFETY: as in `extras`, borrowed through `&mut self`.
        self.extras_ptr()
            .map(|mut extras| unsafe { extras.as_mut() })
    }

    /// The extras, created by `make` if the arena has none yet.
    pub(crate) fn extras_or_insert_with(&self, make: impl FnOnce() -> X) -> &X {
        if !self.has_extras() {
            let extras = NonNull::from(Box::leak(Box::new(make())));
            self.extras.set(MaybeUninit::new(extras));
            // The flag is clear: adding it sets it.
            self.used.set(self.used.get() + EXTRAS);
        }
        self.extras().expect("just set")
    }

    /// Moves every pending closure into a new arena, which also takes the segments; this one
    /// keeps its extras, if any, and starts over with empty storage.
    pub(crate) fn take(&mut self) -> Self {
        let mut taken = Self::new();
        self.swap_storage(&mut taken);
        taken
    }

    /// Puts back closures moved out by [`Arena::take`] into this arena, which must hold none:
    /// the inverse of `take`. This arena keeps its extras; the storage it grew meanwhile is
    /// freed, and so are `taken`'s extras.
    pub(crate) fn put_back(&mut self, mut taken: Self) {
        debug_assert_eq!(self.slots(), 0);
        self.swap_storage(&mut taken);
    }

    /// Exchanges the closures and storage of two arenas; each keeps its own extras.
    fn swap_storage(&mut self, other: &mut Self) {
        // Moving the slots is fine here: `&mut` means none of them is lent out.
        mem::swap(self, other);
        let (mine, theirs) = (other.used.get() & EXTRAS, self.used.get() & EXTRAS);
        // With the flag cleared, adding a flag (or zero) sets it as the owner's was.
        self.used.set((self.used.get() & !EXTRAS) + mine);
        other.used.set((other.used.get() & !EXTRAS) + theirs);
        self.extras.swap(&other.extras);
        // Each storage now has the other's limit, if any.
        self.forget_room();
        other.forget_room();
    }

    /// Runs every pending closure, last first. If one panics, the others still run (their
    /// panics are dropped) and the first panic resumes.
    #[inline(always)]
    pub(crate) fn run_all(&mut self) {
        self.consume_all(Mode::Run);
    }

    /// If the arena holds at least one closure, all of them inline, and nothing else (no
    /// segment, no extras), runs them all, last first, and returns true; otherwise does nothing
    /// and returns false. The hot path of a scope's drop: afterwards there is nothing to free,
    /// even if a closure panicked. If one does, the others still run, with that panic in
    /// flight (see [`drain::finish_caught`]), and it resumes, unless the thread was already
    /// unwinding: then every panic is dropped, since one escaping a drop during an unwind would
    /// abort.
    #[inline(always)]
    pub(crate) fn run_if_only_inline(&mut self) -> bool {
        let used = self.used.get();
        // Wrapping: zero becomes huge, and the `EXTRAS` flag keeps `used` huge too; `heap_end`
        // is zero, or past the inline slots.
        if (used.wrapping_sub(SLOT) | self.heap_end.get()) >= N * SLOT {
            return false;
        }
        // SAFETY: by the test, `used - SLOT` did not wrap. (Spares the loop below its entry
        // test.)
        unsafe { core::hint::assert_unchecked(used >= SLOT) };
        // No flag and no segment: emptied, the arena is all zero.
        let mut run = self.detach_inline_as(used, 0, Mode::Run);
        #[cfg(feature = "std")]
        {
            // Free on the happy path, unlike a test of `std::thread::panicking()` first.
            let ran = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| run.consume()));
            if let Err(payload) = ran {
                let (base, end) = run.into_parts();
                // SAFETY: the slots the run had left, which nothing else consumes.
                unsafe { drain::finish_caught(base, end, payload) };
            }
        }
        #[cfg(not(feature = "std"))]
        run.consume();
        true
    }

    /// Drops every pending closure, last first, without running it; a panicking drop does not
    /// stop the others.
    #[inline(always)]
    pub(crate) fn discard_all(&mut self) {
        self.consume_all(Mode::Discard);
    }

    /// Runs every pending closure, last first, with `context`, catching every panic: the first
    /// payload is returned, later ones are dropped; `context.panics` counts them all as they
    /// happen.
    #[cfg(feature = "std")]
    pub(crate) fn run_all_caught_in(&mut self, context: &mut DrainContext) -> Option<Payload> {
        // `context` is only reached through the mode until the drain is over.
        self.consume_all_caught(Mode::RunIn(NonNull::from(&mut *context)))
    }

    /// Like [`Arena::run_all_caught_in`] without `std`: the first panic propagates once
    /// every closure ran, and a second one aborts.
    #[cfg(not(feature = "std"))]
    pub(crate) fn run_all_in(&mut self, context: &mut DrainContext) {
        self.consume_all(Mode::RunIn(NonNull::from(&mut *context)));
    }

    /// Runs every pending closure, last first, catching and dropping every panic: for a scope
    /// dropped while its thread is already unwinding.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn run_all_caught(&mut self) {
        if let Some(payload) = self.consume_all_caught(Mode::Run) {
            drop_payload(payload);
        }
    }

    #[cfg(feature = "std")]
    /// Consumes the last pending closure for an async drain, which has called
    /// [`Arena::forget_all_sites`] first: runs it if it is sync, returns the future of an
    /// async cleanup. One at a time, so that the caller can await between
    /// two. A panic propagates, with the closure consumed and the arena consistent.
    #[inline]
    pub(crate) fn start_last(&mut self, context: &mut DrainContext) -> Step<'env> {
        let used = self.used.get();
        let bytes = used & !FLAGS;
        if bytes == 0 {
            return Step::Done;
        }
        let last = bytes - SLOT;
        let slot = if last < N * SLOT {
            // SAFETY: within the inline array.
            unsafe { self.inline_slots().byte_add(last) }
        } else {
            self.leave_segment_slot(last)
        };
        // SAFETY: the last slot is initialised.
        let vacant = used & VACATED != 0 && unsafe { Slot::is_vacant(slot) };
        // The slot leaves the arena before it is consumed, so it is consumed exactly once even
        // if it panics. The flags, if any, are unchanged by the decrement.
        if last == 0 {
            self.used.set(self.emptied());
        } else {
            self.used.set(used - SLOT);
            if vacant {
                self.set_vacated(self.vacated() - 1);
            }
        }
        // SAFETY: the slot was the last initialised one, which the arena no longer counts;
        // `&mut self` means no reference lent out by a `hold` is alive. The future's lifetime
        // is put back as `'env`, which every closure stored here outlives.
        match unsafe { Slot::start_in_place(slot, context) } {
            Some(started) => Step::Await(started),
            None => Step::Ran,
        }
    }

    #[cfg(feature = "std")]
    /// The last slot, at byte `last` in a segment, about to leave the arena: if it is
    /// `current`'s first, the segment before becomes current (or, for the first segment, it
    /// stays current and the slots left are inline), which keeps the invariant for the
    /// shorter length.
    fn leave_segment_slot(&self, last: usize) -> *mut Slot {
        // By the invariant, `current` holds the last index.
        let slot = self.heap_base().wrapping_byte_add(last);
        // SAFETY: the arena's segments are live until it is dropped.
        let header = unsafe { Segment::header(self.current().expect("past the inline slots")) };
        if last == header.start * SLOT {
            if let Some(prev) = header.prev {
                self.enter(prev, true);
            }
        }
        slot
    }

    /// Consumes every pending closure, last first; the first panic resumes once all are.
    #[inline(always)]
    fn consume_all(&mut self, mode: Mode) {
        let used = self.used.get();
        // One test for the hot path: closures inline only, no segment to mark as retained
        // (`heap_end` is zero or past the inline slots), no flag.
        if (used | self.heap_end.get()) <= N * SLOT {
            self.detach_inline_as(used, 0, mode).consume_all();
        } else {
            self.consume_all_slow(mode);
        }
    }

    #[cold]
    #[inline(never)]
    fn consume_all_slow(&mut self, mode: Mode) {
        self.forget_all_sites();
        let count = self.slots();
        if count <= N {
            self.detach_inline(count * SLOT, mode).consume_all();
        } else {
            self.detach_spilled(count, mode).consume_all();
        }
    }

    /// Consumes every pending closure, last first, catching every panic; returns the first
    /// payload.
    #[cfg(feature = "std")]
    fn consume_all_caught(&mut self, mode: Mode) -> Option<Payload> {
        self.forget_all_sites();
        let count = self.slots();
        if count <= N {
            self.detach_inline(count * SLOT, mode).consume_all_caught()
        } else {
            self.detach_spilled(count, mode).consume_all_caught()
        }
    }

    /// Hands the pending closures, all inline and `bytes` long together, to a [`Run`] and
    /// leaves the arena without closures but with its storage (and extras). A `Mode::RunIn`
    /// context must be borrowed by the caller for as long as the run lives.
    #[inline(always)]
    fn detach_inline(&mut self, bytes: usize, mode: Mode) -> Run<'_> {
        self.detach_inline_as(bytes, self.emptied(), mode)
    }

    /// [`Arena::detach_inline`], with `used` set to `emptied` (which the caller computed as
    /// [`Arena::emptied`] does, or knows).
    #[inline(always)]
    fn detach_inline_as(&mut self, bytes: usize, emptied: usize, mode: Mode) -> Run<'_> {
        debug_assert_eq!(emptied, self.emptied());
        self.used.set(emptied);
        // SAFETY: with the length zero, the arena will neither read nor drop the initialised
        // inline slots, which stay valid and unaliased while `self` is mutably borrowed (no
        // reference lent out by a `hold` outlives that borrow); the run consumes each of them
        // exactly once.
        unsafe {
            let base = self.inline_slots();
            Run::new(base, base.byte_add(bytes), mode)
        }
    }

    /// [`Arena::detach_inline`] for `count > N` closures, which reach into the segments;
    /// those are refilled from the first one afterwards.
    #[cold]
    fn detach_spilled(&mut self, count: usize, mode: Mode) -> Runs<'_> {
        self.used.set(self.emptied());
        let current = self
            .current()
            .expect("more than N closures reach a segment");
        let first = self.first_segment().expect("there is a current segment");
        self.enter(first, true);
        // SAFETY: by the invariant, `current` holds the slots from its start to `count`, the
        // segments before it and the inline slots are full, and all of them stay live and
        // unaliased while `self` is mutably borrowed; as in `detach_inline`, the length is
        // zero.
        unsafe {
            let in_top = count - Segment::header(current).start;
            Runs::new(current, in_top, self.inline_slots(), N, mode)
        }
    }
}

impl<const N: usize, X> Drop for Arena<'_, N, X> {
    #[inline(always)]
    fn drop(&mut self) {
        // Pending closures were drained by the scope; only storage is left.
        if !self.is_unused() {
            self.free();
        }
    }
}

impl<const N: usize, X> Arena<'_, N, X> {
    /// Frees the segments and the extras of a drained arena, which is left empty, as new:
    /// what dropping it does, for an owner that keeps it in a `ManuallyDrop`.
    pub(crate) fn release(&mut self) {
        debug_assert_eq!(self.slots(), 0, "only a drained arena is released");
        if !self.is_unused() {
            self.free();
            self.used.set(0);
            self.heap_end.set(0);
        }
    }

    /// Frees the segments and the extras. Out of line, so that dropping an arena that has
    /// neither saves no registers.
    #[cold]
    #[inline(never)]
    fn free(&mut self) {
        if let Some(first) = self.first_segment() {
            // SAFETY: the arena owns its segments and uses none of them after this.
            unsafe { Segment::free_from(first) };
        }
        if let Some(extras) = self.extras_ptr() {
            // SAFETY: the arena owns the box, and drops it only here.
            drop(unsafe { Box::from_raw(extras.as_ptr()) });
        }
        if let Some(sites) = self.sites_ptr() {
            // SAFETY: as for the extras.
            drop(unsafe { Box::from_raw(sites.as_ptr()) });
        }
    }
}

// SAFETY: a `SendScope` owns a `Scope` that, by `SendScope`'s invariant, holds only `Send`
// closures and held values and a `Send` error handler: every `SendScope` method that stores
// something requires `Send`, and the inner scope is never lent out (only given up by
// `into_local`). The rest of what a scope owns (its inline slots and heap segments, the static
// shim tables, limits, counters) is `Send`, so moving it to another thread moves nothing that
// must stay. References lent out by `hold` borrow the scope, so it cannot move while they live.
unsafe impl<const N: usize> Send for crate::SendScope<'_, N> {}

// SAFETY: an `AsyncScope` holds only `Send` closures, futures and held values (every method
// that stores something requires `Send`), so moving it to another thread moves nothing that
// must stay, as for `SendScope`.
#[cfg(feature = "std")]
unsafe impl Send for crate::AsyncScope {}

// SAFETY: through `&AsyncScope` only registration and reading the limit and stats are
// possible, and each holds the scope's busy flag (an atomic swap, which panics if another thread holds it) for as long
// as it touches the arena, so the arena's cells are never accessed by two threads at once.
// What registration lends out (`hold_async`) is a `Send` value in a slot that never moves and
// that later registrations do not touch.
#[cfg(feature = "std")]
unsafe impl Sync for crate::AsyncScope {}

/// The fast paths' predicates: a wrong answer would only send a scope down a slower path that
/// does the same, so the integration tests cannot see it. Their contracts are checked here.
#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::Arena;
    use crate::deferred::Plain;

    type TestArena = Arena<'static, 2, ()>;

    fn with(count: usize) -> TestArena {
        let arena = TestArena::new();
        for _ in 0..count {
            let _ = arena.push(
                Plain(|| ()),
                core::panic::Location::caller(),
                |_| usize::MAX,
                drop,
            );
        }
        arena
    }

    fn drained(mut arena: TestArena) {
        arena.run_all();
    }

    #[test]
    fn run_if_only_inline_means_one_to_n_closures_and_nothing_else() {
        let answers: Vec<bool> = (0..=4)
            .map(|count| {
                let mut arena = with(count);
                let answer = arena.run_if_only_inline();
                assert_eq!(arena.len(), if answer { 0 } else { count });
                drained(arena);
                answer
            })
            .collect();
        assert_eq!(answers, [false, true, true, false, false]);
        let mut arena = with(1);
        arena.extras_or_insert_with(|| ());
        assert!(!arena.run_if_only_inline(), "extras need the slow path");
        drained(arena);
        let mut arena = with(3);
        arena.run_all();
        let _ = arena.push(
            Plain(|| ()),
            core::panic::Location::caller(),
            |_| usize::MAX,
            drop,
        );
        assert!(!arena.run_if_only_inline(), "a segment to free");
        drained(arena);
        // Every inline slot of a larger arena, whose lengths reach past one slot's bytes.
        let mut arena = Arena::<'static, 8, ()>::new();
        for _ in 0..8 {
            let _ = arena.push(
                Plain(|| ()),
                core::panic::Location::caller(),
                |_| usize::MAX,
                drop,
            );
        }
        assert!(arena.run_if_only_inline());
        assert_eq!(arena.len(), 0);
    }

    #[test]
    #[should_panic(expected = "pending closures")]
    fn the_byte_count_stays_below_the_flags() {
        // Checked before the segment is allocated, so only the arithmetic is exercised.
        TestArena::new().free_slot(super::MAX_PENDING);
    }

    #[test]
    fn is_unused_means_nothing_to_run_or_free() {
        let arena = with(0);
        assert!(arena.is_unused());
        drained(arena);
        let arena = with(1);
        assert!(!arena.is_unused(), "a closure");
        drained(arena);
        let mut arena = with(3);
        arena.run_all();
        assert!(!arena.is_unused(), "a segment kept for reuse");
        assert_eq!((arena.len(), arena.capacity()), (0, 6));
        let _ = arena.push(
            Plain(|| ()),
            core::panic::Location::caller(),
            |_| usize::MAX,
            drop,
        );
        assert_eq!(arena.len(), 1, "registering after a drain clears the mark");
        arena.run_all();
        assert!(!arena.is_unused(), "the segment is still kept");
        let arena = with(0);
        arena.extras_or_insert_with(|| ());
        assert!(!arena.is_unused(), "extras");
    }

    /// The short paths of registration: they send a registration down the general path
    /// whenever they answer `None`, so only their answers are checked here.
    #[cfg(feature = "std")]
    mod short_paths {
        use core::panic::Location;
        use core::ptr::NonNull;

        use super::super::{Arena, SLOT, Slot};
        use crate::deferred::Plain;

        /// Registers a plain closure at `site`, as a scope does.
        fn register<const N: usize>(
            arena: &Arena<'static, N, ()>,
            site: &'static Location<'static>,
        ) {
            let _ = arena.push(Plain(|| ()), site, |_| usize::MAX, drop);
        }

        /// The slot of index `index`, inline or in `current`.
        fn slot_at<const N: usize>(arena: &Arena<'static, N, ()>, index: usize) -> *mut Slot {
            if index < N {
                arena.inline_slots().wrapping_add(index)
            } else {
                arena.heap_base().wrapping_byte_add(index * SLOT)
            }
        }

        /// The tracked short path gives the next free slot exactly when registering needs nothing
        /// else: tracking, after a recorded registration of the same line, no segment to enter;
        /// a profile started since does not end the bound.
        #[test]
        fn tracked_slot_is_the_next_free_slot_when_nothing_else_is_needed() {
            let _profile = crate::profile::tests::exclusive();
            let (here, other) = (Location::caller(), Location::caller());
            let mut arena = Arena::<'static, 8, ()>::new();
            register(&arena, here);
            assert!(arena.tracked_slot(here).is_none(), "not tracking");
            arena.start_tracking(here);
            assert!(
                arena.tracked_slot(here).is_none(),
                "no registration recorded since"
            );
            register(&arena, here);
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 2)));
            assert!(arena.tracked_slot(other).is_none(), "another line");
            for _ in 2..8 {
                register(&arena, here);
            }
            assert!(arena.tracked_slot(here).is_none(), "a segment to add");
            register(&arena, here);
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 9)));
            arena.run_all();
            assert!(
                arena.tracked_slot(here).is_none(),
                "segments kept: the slow path clears it"
            );
            register(&arena, other);
            register(&arena, here);
            // Inline again, with a segment kept: an inline slot, not one past the segment's base.
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 2)));
            // The profile, started now, counts from the next registration past the bound, as
            // it does on a plain storage: the bound stands.
            crate::profile::enable();
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 2)));
            crate::profile::disable();
            arena.run_all();
        }

        /// The tracked short path takes no more slots than the room the last recorded
        /// registration saw, and asks again once the limit or the storage's scope changes.
        #[test]
        fn tracked_slot_stays_within_the_room_the_last_registration_saw() {
            let _profile = crate::profile::tests::exclusive();
            let here = Location::caller();
            let mut arena = Arena::<'static, 2, ()>::new();
            arena.start_tracking(here);
            let limited = |arena: &Arena<'static, 2, ()>, room: usize| {
                let _ = arena.push(Plain(|| ()), here, |_| room, drop);
            };
            // Segments: slots 2 to 5, then 6 to 11.
            limited(&arena, 5); // slot 0: it and four more
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 1)));
            register(&arena, here); // slot 1, on the fast path: the bound stays
            assert!(arena.tracked_slot(here).is_none(), "a segment to add");
            limited(&arena, 3); // slot 2, in a new segment: it and two more
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 3)));
            register(&arena, here);
            register(&arena, here);
            assert!(arena.tracked_slot(here).is_none(), "no room left");
            limited(&arena, 2); // slot 5: it and one more, past the segment
            assert!(arena.tracked_slot(here).is_none(), "a segment to add");
            limited(&arena, 9); // slot 6, in a new segment
            assert_eq!(arena.tracked_slot(here), NonNull::new(slot_at(&arena, 7)));
            arena.forget_room();
            assert!(arena.tracked_slot(here).is_none(), "a new limit");
            limited(&arena, 9); // slot 7
            let taken = arena.take();
            assert!(taken.tracked_slot(here).is_none(), "under another limit");
            limited(&taken, 9); // slot 8
            assert_eq!(taken.tracked_slot(here), NonNull::new(slot_at(&taken, 9)));
            arena.put_back(taken);
            assert!(
                arena.tracked_slot(here).is_none(),
                "back under the arena's limit"
            );
            arena.run_all();
        }

        /// A bound that the profile set and then had no use for (it was turned off before it
        /// counted anything) is dropped at the first registration that reaches it, so the
        /// fast path fills the rest of the segment.
        #[test]
        fn a_bound_the_profile_left_is_dropped() {
            let _profile = crate::profile::tests::exclusive();
            let here = Location::caller();
            let mut arena = Arena::<'static, 2, ()>::new();
            for _ in 0..4 {
                register(&arena, here);
            }
            crate::profile::enable();
            arena.run_all(); // keeps the segment, bounded for the profile to begin counting
            crate::profile::disable();
            assert_eq!(arena.heap_end.get(), 3 * SLOT);
            for _ in 0..4 {
                register(&arena, here);
            }
            assert_eq!(arena.heap_end.get(), arena.current_end());
            assert_eq!(
                arena.current_end(),
                6 * SLOT,
                "no new segment (2 + 4 slots)"
            );
            arena.run_all();
        }

        /// The exact profile's short path gives the next free slot of a counted pile-up, and
        /// counts it; otherwise nothing.
        #[test]
        fn counted_slot_is_the_next_counted_slot_of_the_last_line() {
            let _profile = crate::profile::tests::exclusive();
            let (here, other) = (Location::caller(), Location::caller());
            let arena = Arena::<'static, 2, ()>::new();
            register(&arena, here);
            register(&arena, here);
            crate::profile::enable();
            assert!(arena.counted_slot(here).is_none(), "inline");
            register(&arena, here); // spills: counting begins, slots 0 to 2 counted
            let entry = crate::profile::entry(here, 1);
            let counted = entry.pending();
            assert!(arena.counted_slot(other).is_none(), "another line");
            crate::profile::enable_sampled(2);
            assert!(arena.counted_slot(here).is_none(), "sampled");
            crate::profile::enable();
            assert_eq!(entry.pending(), counted, "no answer, no count");
            let slot = arena
                .counted_slot(here)
                .expect("the next slot of the pile-up");
            assert_eq!(slot.as_ptr(), slot_at(&arena, 3));
            assert_eq!(entry.pending(), counted + 1);
            // Complete the registration as `push` does, and check the fast path stops at the next.
            // SAFETY: the free slot the short path returned.
            unsafe { Slot::write(slot.as_ptr(), Plain(|| ())) };
            arena.used.set(arena.used.get() + SLOT);
            assert_eq!(arena.heap_end.get(), 4 * SLOT);
            crate::profile::disable();
            assert!(arena.counted_slot(here).is_none(), "the profile is off");
            let mut arena = arena;
            arena.run_all();
            assert_eq!(
                entry.pending(),
                0,
                "the four counted slots left with the drain"
            );
        }
    }
}
