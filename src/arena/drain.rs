//! Draining: consuming every pending slot, last first, and going on when a closure panics.
//!
//! A drain is made of runs of contiguous slots. A scope that stayed inline has one; the hot
//! path is that single run, kept to two pointers so that its loop does as little as possible.

#[cfg(feature = "std")]
use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem;
use core::ptr::NonNull;

use super::segment::Segment;
use super::slot::{Mode, Slot};

/// A caught panic.
#[cfg(feature = "std")]
pub(crate) type Payload = Box<dyn core::any::Any + Send>;

/// Contiguous slots, consumed last first, that go on being consumed if one of them panics.
///
/// The hot path ([`Run::consume_all`]) has no `catch_unwind`: if a closure panics, the
/// unwinding drops this value, and its [`Drop`] consumes the remaining slots with every further
/// panic caught, so the first payload is the one that keeps unwinding.
pub(crate) struct Run<'a> {
    /// Invariant: `base..end` are initialised slots that nothing else will consume.
    base: *mut Slot,
    end: *mut Slot,
    mode: Mode,
    _slots: PhantomData<&'a mut [Slot]>,
}

impl<'a> Run<'a> {
    /// Takes ownership of the slots from `base` up to `end`.
    ///
    /// # Safety
    /// `base..end` must be initialised slots in one allocation, which the caller will neither
    /// read nor drop again (typically it has just set its length to zero), and the memory must
    /// stay valid and unaliased for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn new(base: *mut Slot, end: *mut Slot, mode: Mode) -> Self {
        Run {
            base,
            end,
            mode,
            _slots: PhantomData,
        }
    }

    /// Consumes every slot, last first. Panics with the first closure's payload if one
    /// panicked, after all the others have been consumed (by the drop guard).
    #[inline(always)]
    pub(crate) fn consume_all(mut self) {
        self.consume();
        // Nothing is left for the drop guard to finish.
        mem::forget(self);
    }

    /// The slots left, `base..end`, which the caller now owns.
    #[cfg(feature = "std")]
    #[inline(always)]
    pub(crate) fn into_parts(self) -> (*mut Slot, *mut Slot) {
        let parts = (self.base, self.end);
        mem::forget(self);
        parts
    }

    /// Consumes every slot, last first. If a closure panics, the panic propagates with the
    /// slots after it left in the run, for its drop (or [`finish_caught`]) to consume.
    #[inline(always)]
    pub(crate) fn consume(&mut self) {
        let (base, mode) = (self.base, self.mode);
        let mut end = self.end;
        if end == base {
            return;
        }
        // A bottom-tested loop: the test at the top would cost two instructions per slot.
        loop {
            // SAFETY: `end > base` within one allocation, so one step back stays in bounds;
            // `self.end` moves first, handing that slot's sole ownership to this call, so
            // nothing consumes it again even if it panics, and a panic leaves exactly the
            // slots not yet consumed.
            unsafe {
                end = end.sub(1);
                self.end = end;
                Slot::consume_in_place(end, mode);
            }
            if end == base {
                break;
            }
        }
    }

    /// Consumes every slot, last first, catching every panic. Returns the first payload; later
    /// ones are dropped.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn consume_all_caught(mut self) -> Option<Payload> {
        let mut first = None;
        while let Some(slot) = self.pop() {
            let mode = self.mode;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: `pop` handed us sole ownership of this initialised slot.
                unsafe { Slot::consume_in_place(slot, mode) }
            }));
            if let Err(payload) = outcome {
                mode.count_panic();
                match first {
                    None => first = Some(payload),
                    Some(_) => drop_payload(payload),
                }
            }
        }
        first
    }

    /// The last remaining slot, whose ownership passes to the caller: moving `end` first
    /// means nothing here will consume it again, even if it panics.
    #[cfg(feature = "std")]
    #[inline(always)]
    fn pop(&mut self) -> Option<*mut Slot> {
        if self.end == self.base {
            return None;
        }
        // SAFETY: `end > base` within one allocation, so one step back stays in bounds.
        self.end = unsafe { self.end.sub(1) };
        Some(self.end)
    }
}

impl Drop for Run<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Only non-empty when a closure panicked inside `consume_all`.
        if self.end != self.base {
            self.finish_after_panic();
        }
    }
}

impl Run<'_> {
    #[cold]
    #[inline(never)]
    fn finish_after_panic(&mut self) {
        // The panic that brought us here escaped the closure; later closures see it.
        self.mode.count_panic();
        let rest = Run {
            base: self.base,
            end: mem::replace(&mut self.end, self.base),
            mode: self.mode,
            _slots: PhantomData,
        };
        finish_quietly(rest);
    }
}

/// Consumes what is left after a panic: every further panic is caught and dropped, so that
/// the first keeps unwinding. Without `std` there is no `catch_unwind`: a second panic aborts,
/// as in `Vec`'s drop.
#[cold]
fn finish_quietly<R: Consume>(rest: R) {
    #[cfg(feature = "std")]
    {
        if let Some(payload) = rest.consume_all_caught() {
            drop_payload(payload);
        }
    }
    #[cfg(not(feature = "std"))]
    rest.consume_all();
}

/// The two ways a drain consumes what it holds, for [`finish_quietly`].
trait Consume {
    #[cfg(not(feature = "std"))]
    fn consume_all(self);
    #[cfg(feature = "std")]
    fn consume_all_caught(self) -> Option<Payload>;
}

impl Consume for Run<'_> {
    #[cfg(not(feature = "std"))]
    fn consume_all(self) {
        Run::consume_all(self);
    }

    #[cfg(feature = "std")]
    fn consume_all_caught(self) -> Option<Payload> {
        Run::consume_all_caught(self)
    }
}

impl Consume for Runs<'_> {
    #[cfg(not(feature = "std"))]
    fn consume_all(self) {
        Runs::consume_all(self);
    }

    #[cfg(feature = "std")]
    fn consume_all_caught(self) -> Option<Payload> {
        Runs::consume_all_caught(self)
    }
}

/// Where the next run of a [`Runs`] is.
#[derive(Clone, Copy)]
enum Next {
    /// The first `len` slots of a segment; the segments before it are full.
    Segment(NonNull<Segment>, usize),
    /// The inline slots.
    Inline,
    Done,
}

/// The runs of a drain that reaches into the segments: the used part of the segment being
/// filled, every segment before it, then the inline slots. Like [`Run`], it goes on after a
/// panic: if one escapes, its [`Drop`] consumes the runs not yet reached.
pub(crate) struct Runs<'a> {
    /// Invariant: the slots of this run and of every run after it are initialised, and
    /// nothing else will consume them.
    next: Next,
    inline: *mut Slot,
    inline_len: usize,
    mode: Mode,
    _slots: PhantomData<&'a mut [Slot]>,
}

impl<'a> Runs<'a> {
    /// Takes ownership of the first `len` slots of `top`, of every slot of the segments before
    /// it, and of `inline[..inline_len]`.
    ///
    /// # Safety
    /// As for [`Run::new`], for all of those slots; the segments must stay live for `'a`.
    pub(crate) unsafe fn new(
        top: NonNull<Segment>,
        len: usize,
        inline: *mut Slot,
        inline_len: usize,
        mode: Mode,
    ) -> Self {
        Runs {
            next: Next::Segment(top, len),
            inline,
            inline_len,
            mode,
            _slots: PhantomData,
        }
    }

    /// The next run down, whose slots pass to the caller.
    fn next_run(&mut self) -> Option<Run<'a>> {
        let (base, len) = match self.next {
            Next::Segment(segment, len) => {
                // SAFETY: the segments stay live for `'a` (invariant).
                let prev = unsafe { Segment::header(segment) }.prev;
                self.next = match prev {
                    // SAFETY: as above.
                    Some(prev) => Next::Segment(prev, unsafe { Segment::header(prev) }.capacity),
                    None => Next::Inline,
                };
                // SAFETY: as above.
                (unsafe { Segment::slots(segment) }, len)
            }
            Next::Inline => {
                self.next = Next::Done;
                (self.inline, self.inline_len)
            }
            Next::Done => return None,
        };
        // SAFETY: by the invariant these slots are ours, and moving `next` past them hands
        // them to the run alone; they lie in one allocation.
        Some(unsafe { Run::new(base, base.add(len), self.mode) })
    }

    /// As [`Run::consume_all`], run after run.
    #[cold]
    #[inline(never)]
    pub(crate) fn consume_all(mut self) {
        while let Some(run) = self.next_run() {
            run.consume_all();
        }
    }

    /// As [`Run::consume_all_caught`], run after run.
    #[cfg(feature = "std")]
    #[cold]
    pub(crate) fn consume_all_caught(mut self) -> Option<Payload> {
        let mut first = None;
        while let Some(run) = self.next_run() {
            match (&first, run.consume_all_caught()) {
                (None, payload) => first = payload,
                (Some(_), Some(payload)) => drop_payload(payload),
                (Some(_), None) => {}
            }
        }
        first
    }
}

impl Drop for Runs<'_> {
    fn drop(&mut self) {
        // Only reached with runs left when a closure panicked inside `consume_all`.
        if !matches!(self.next, Next::Done) {
            let rest = Runs {
                next: mem::replace(&mut self.next, Next::Done),
                inline: self.inline,
                inline_len: self.inline_len,
                mode: self.mode,
                _slots: PhantomData,
            };
            finish_quietly(rest);
        }
    }
}

/// Consumes the rest of a [`Mode::Run`] run, `base..end`, whose closure panicked with
/// `payload` (caught by the caller), then resumes that panic unless the thread was already
/// unwinding when the drain began (a panic escaping a drop then would abort): then it is
/// dropped. The rest runs while the panic is in flight again, so that those closures see it,
/// as Go's deferred calls see a panic raised by one that ran before them. The run comes in
/// parts, so that a caller keeps them in registers.
///
/// # Safety
/// As for [`Run::new`].
#[cfg(feature = "std")]
#[cold]
#[inline(never)]
pub(crate) unsafe fn finish_caught(base: *mut Slot, end: *mut Slot, payload: Payload) {
    // Read before the panic is raised again, which would count it.
    let unwinding = std::thread::panicking();
    // SAFETY: as the caller guarantees; the run's drop consumes the slots during the unwind
    // (with every further panic caught and dropped, see `Run`).
    let rest = unsafe { Run::new(base, end, Mode::Run) };
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _rest = rest;
        std::panic::resume_unwind(payload)
    }));
    let Err(payload) = again;
    if unwinding {
        drop_payload(payload);
    } else {
        std::panic::resume_unwind(payload);
    }
}

/// Drops a value of the user's (an error, a refused closure) whose destructor may panic,
/// where that panic must not get out: during an unwind it would abort the process, and
/// elsewhere it would replace the panic or the report that matters. With `std`, it is caught
/// and dropped.
#[cold]
pub(crate) fn drop_quietly<T>(value: T) {
    #[cfg(feature = "std")]
    if let Err(payload) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
    {
        drop_payload(payload);
    }
    #[cfg(not(feature = "std"))]
    drop(value);
}

/// Drops a caught panic payload whose own destructor might panic too.
#[cfg(feature = "std")]
pub(crate) fn drop_payload(mut payload: Payload) {
    // A destructor that panics hands us the next payload to drop; only a chain that never
    // ends (which no finite program builds on purpose) keeps this loop going.
    while let Err(next) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        payload = next;
    }
}
