//! Heap segments: the storage a scope grows into once its inline slots are full.
//!
//! A segment is one allocation, a header followed by `capacity` slots, and is never moved or
//! resized: growing adds a segment, so a slot's address is stable from registration until it
//! is consumed. Segments form a doubly linked chain in the order they are filled; a scope
//! keeps its chain after a drain and refills it from the first segment (that is how the loop
//! helpers stop allocating once warmed up), and frees it when it is dropped.

use alloc::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use core::ptr::NonNull;

use super::slot::Slot;

/// The header at the start of every segment's allocation; the slots follow it.
#[derive(Clone, Copy)]
pub(crate) struct Segment {
    /// The segment filled before this one, if any (the inline slots come before the first).
    pub(crate) prev: Option<NonNull<Segment>>,
    /// The segment filled after this one, kept for reuse.
    pub(crate) next: Option<NonNull<Segment>>,
    /// The scope-wide index of this segment's first slot.
    pub(crate) start: usize,
    pub(crate) capacity: usize,
}

// The slots start right after the header, suitably aligned.
static_assertions::const_assert_eq!(
    core::mem::size_of::<Segment>() % core::mem::align_of::<Slot>(),
    0
);
static_assertions::const_assert!(core::mem::align_of::<Segment>() >= core::mem::align_of::<Slot>());

/// The fewest slots a segment holds, so that a scope with few inline slots does not allocate
/// for every closure or two.
const MIN_CAPACITY: usize = 4;

impl Segment {
    fn layout(capacity: usize) -> Layout {
        Layout::new::<Segment>()
            .extend(Layout::array::<Slot>(capacity).expect("segment size overflows"))
            .expect("segment size overflows")
            .0
    }

    /// Allocates a segment for the slots from index `start` on, after `prev`; as large as
    /// everything before it, so that a scope's capacity doubles with each segment.
    pub(crate) fn new(start: usize, prev: Option<NonNull<Segment>>) -> NonNull<Segment> {
        let capacity = start.max(MIN_CAPACITY);
        let layout = Self::layout(capacity);
        // SAFETY: the layout is never zero-sized (it holds a header).
        let segment = NonNull::new(unsafe { alloc(layout) })
            .unwrap_or_else(|| handle_alloc_error(layout))
            .cast::<Segment>();
        // SAFETY: freshly allocated with the header's layout at its start.
        unsafe {
            segment.write(Segment {
                prev,
                next: None,
                start,
                capacity,
            })
        };
        if let Some(prev) = prev {
            // SAFETY: `prev` is a live segment (caller), and no reference to its header exists.
            unsafe { (*prev.as_ptr()).next = Some(segment) };
        }
        segment
    }

    /// Frees `segment` and every segment after it. Their slots must hold no closure.
    ///
    /// # Safety
    /// `segment` must be a live segment from [`Segment::new`] that nothing uses afterwards,
    /// and neither must the segments after it be.
    pub(crate) unsafe fn free_from(segment: NonNull<Segment>) {
        let mut next = Some(segment);
        while let Some(segment) = next {
            // SAFETY: live (caller); read before it is freed.
            let Segment {
                next: following,
                capacity,
                ..
            } = unsafe { Self::header(segment) };
            // SAFETY: allocated by `Segment::new` with this layout, and unused from now on.
            unsafe { dealloc(segment.as_ptr().cast(), Self::layout(capacity)) };
            next = following;
        }
    }

    /// The segment's first slot.
    ///
    /// # Safety
    /// `segment` must be live.
    #[inline(always)]
    pub(crate) unsafe fn slots(segment: NonNull<Segment>) -> *mut Slot {
        // SAFETY: the slots follow the header in the same allocation (see the assertions).
        unsafe { segment.as_ptr().add(1).cast::<Slot>() }
    }

    /// A copy of the segment's header.
    ///
    /// # Safety
    /// `segment` must be live.
    #[inline(always)]
    pub(crate) unsafe fn header(segment: NonNull<Segment>) -> Segment {
        // SAFETY: live (caller); headers are only ever accessed through raw pointers, so this
        // read conflicts with no reference.
        unsafe { segment.read() }
    }

    /// Bytes of heap that one segment of `capacity` slots occupies.
    pub(crate) fn bytes(capacity: usize) -> usize {
        Self::layout(capacity).size()
    }
}
