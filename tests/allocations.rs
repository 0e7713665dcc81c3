//! The allocation promises, counted by a global allocator: registering small closures costs no
//! heap allocation, large ones cost exactly one, and loops stop allocating once warmed up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use scoped_defer::{Scope, for_each_scoped, try_for_each_scoped};

/// Loop sizes; smaller under Miri, which interprets every instruction.
const MANY_ITEMS: u64 = if cfg!(miri) { 300 } else { 10_000 };

/// Counts the allocations made by the current thread, so that tests running in parallel do
/// not see each other's.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// Blocks allocated and not yet freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to `System`; the counter is a `const`-initialised
// thread-local `Cell` without a destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = LIVE.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|n| n.set(n.get() - 1));
        // SAFETY: as above, for `dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above, for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The number of allocations (and reallocations) `f` makes on this thread.
fn allocations_of(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// The blocks `f` allocated on this thread and did not free.
fn leaked_by(f: impl FnOnce()) -> isize {
    let before = LIVE.with(Cell::get);
    f();
    LIVE.with(Cell::get) - before
}

/// A closure capturing exactly 24 bytes: the largest that fits inline.
fn small_closure(sum: &Cell<u64>, a: u64, b: u64) -> impl FnOnce() + '_ {
    move || sum.set(sum.get() + a + b)
}

#[test]
fn eight_small_defers_allocate_nothing() {
    let sum = Cell::new(0);
    assert_eq!(size_of_val(&small_closure(&sum, 0, 0)), 24);
    let count = allocations_of(|| {
        let scope: Scope<'_> = Scope::new();
        for i in 0..8 {
            scope.defer(small_closure(&sum, i, 1));
        }
        assert!(!scope.spilled());
    });
    assert_eq!(count, 0);
    assert_eq!(sum.get(), 28 + 8, "all eight ran");
}

#[test]
fn an_oversized_closure_allocates_exactly_once() {
    let sum = Cell::new(0);
    let big = [7u8; 1024];
    let count = allocations_of(|| {
        let scope: Scope<'_> = Scope::new();
        scope.defer(|| ());
        let sum = &sum;
        scope.defer(move || sum.set(big.iter().map(|&b| u64::from(b)).sum()));
    });
    assert_eq!(count, 1);
    assert_eq!(sum.get(), 7 * 1024);
}

#[test]
fn an_over_aligned_closure_allocates_exactly_once() {
    #[repr(align(32))]
    struct Aligned(u8);
    let seen = Cell::new(0);
    let value = Aligned(5);
    let count = allocations_of(|| {
        let scope: Scope<'_> = Scope::new();
        let seen = &seen;
        scope.defer(move || {
            let value = value; // capture the whole over-aligned struct, not just its field
            seen.set(value.0);
        });
    });
    assert_eq!(count, 1);
    assert_eq!(seen.get(), 5);
}

#[test]
fn a_loop_with_three_small_defers_per_item_allocates_nothing() {
    let sum = Cell::new(0);
    let count = allocations_of(|| {
        for_each_scoped(0..MANY_ITEMS, |s, i| {
            s.defer(small_closure(&sum, i, 0));
            s.defer(small_closure(&sum, 0, 1));
            s.defer(small_closure(&sum, 0, 1));
        });
    });
    assert_eq!(count, 0);
    assert_eq!(sum.get(), (0..MANY_ITEMS).sum::<u64>() + 2 * MANY_ITEMS);
}

#[test]
fn a_loop_with_many_defers_per_item_allocates_only_while_warming_up() {
    let run = |items: u64| {
        let sum = Cell::new(0);
        let count = allocations_of(|| {
            for_each_scoped(0..items, |s, i| {
                for _ in 0..100 {
                    s.defer(small_closure(&sum, i, 0));
                }
            });
        });
        assert_eq!(sum.get(), 100 * (0..items).sum::<u64>());
        count
    };
    let few = run(10);
    assert!(few > 0, "100 pending closures outgrow the 8 inline slots");
    assert_eq!(
        run(MANY_ITEMS),
        few,
        "no iteration after the first allocates"
    );
}

#[test]
fn a_scope_growing_to_a_thousand_allocates_logarithmically() {
    let sum = Cell::new(0);
    let count = allocations_of(|| {
        let scope: Scope<'_> = Scope::new();
        for i in 0..1000 {
            scope.defer(small_closure(&sum, i, 0));
        }
    });
    // 8 inline, then 16, 32, ..., 1024 on the heap: 7 allocations.
    assert_eq!(count, 7);
}

#[test]
fn the_optional_features_allocate_once_per_scope() {
    let sum = Cell::new(0);
    let limited = allocations_of(|| {
        let mut scope: Scope<'_> = Scope::with_limit(100);
        for i in 0..7 {
            scope.defer(small_closure(&sum, i, 0));
        }
        scope.run_now();
        for i in 0..7 {
            scope.defer(small_closure(&sum, i, 0));
        }
    });
    assert_eq!(
        limited, 2,
        "the limit, once, and the lines of the closures, once (kept by the drain)"
    );
    let fallible = allocations_of(|| {
        let scope: Scope<'_> = Scope::new();
        for _ in 0..3 {
            scope.defer_fallible(|| Ok::<(), std::io::Error>(()));
            scope.defer_on_error(|| ());
        }
        scope.finish().unwrap();
    });
    assert_eq!(
        fallible, 1,
        "the state of fallible and outcome-aware closures, once"
    );
}

#[test]
fn small_holds_allocate_nothing() {
    let sum = Cell::new(0);
    let count = allocations_of(|| {
        let s: Scope<'_> = Scope::new();
        let sum = &sum;
        // A three-word value with a cleanup that captures nothing, and a two-word value with
        // a cleanup that captures one reference: both fit a slot.
        let triple = s.hold([1u64, 2, 3], |_| ());
        let pair = s.hold((4u64, 5u64), move |(a, b)| sum.set(sum.get() + a + b));
        triple[0] += 10;
        pair.0 += triple[0];
        // A fallible cleanup also keeps where it was registered: a two-word value fits.
        *s.hold_fallible((0u64, 1u64), |_| Ok::<(), std::io::Error>(())) = (2, 3);
        drop(s.finish());
    });
    // The fallible hold allocates the scope's error state (once per scope): nothing for the
    // holds themselves.
    assert_eq!(count, 1);
    assert_eq!(sum.get(), 4 + 11 + 5);

    let count = allocations_of(|| {
        try_for_each_scoped(0..MANY_ITEMS, |s, i| {
            let a = s.hold(i, |_| ());
            let b = s.hold([i; 3], |_| ());
            *a += b[2];
            Ok::<(), ()>(())
        })
        .unwrap();
    });
    assert_eq!(count, 0, "a loop holding small values allocates nothing");
}

#[test]
fn fallible_entries_have_two_inline_words_as_the_third_keeps_their_line() {
    let s: Scope<'_> = Scope::new();
    // The scope's error state, once; then a two-word fallible closure fits its slot.
    s.defer_fallible(|| Ok::<(), std::io::Error>(()));
    let (a, b, c) = (1_u64, 2_u64, 3_u64);
    let two_words = allocations_of(|| {
        s.defer_fallible(move || {
            std::hint::black_box((a, b));
            Ok::<(), std::io::Error>(())
        });
    });
    assert_eq!(two_words, 0);
    let three_words = allocations_of(|| {
        s.defer_fallible(move || {
            std::hint::black_box((a, b, c));
            Ok::<(), std::io::Error>(())
        });
    });
    assert_eq!(
        three_words, 1,
        "a three-word fallible closure is boxed, once"
    );
    let text = String::from("three words");
    let held = allocations_of(|| {
        s.hold_fallible(text, |text| {
            drop(text);
            Ok::<(), std::io::Error>(())
        });
    });
    assert_eq!(
        held, 1,
        "a held `String` with a fallible cleanup is boxed, once"
    );
    s.finish().unwrap();
}

#[cfg(feature = "std")]
#[test]
fn an_async_hold_has_two_inline_words_as_the_third_keeps_its_line() {
    use scoped_defer::AsyncScope;

    let scope = AsyncScope::new();
    let text = String::from("three words");
    let held = allocations_of(|| {
        scope.hold_async(text, |text| async move { drop(text) });
    });
    assert_eq!(held, 1, "a held `String` is boxed, once");
    run_ready(scope.finish()).unwrap();
}

#[test]
fn a_scope_with_stats_keeps_all_n_slots_inline() {
    let count = allocations_of(|| {
        let mut s: Scope<'_, 4> = Scope::default();
        s.track_stats();
        for _ in 0..4 {
            s.defer(|| ());
        }
        assert!(!s.spilled(), "the stats take no inline slot");
        assert_eq!(s.capacity(), 4);
    });
    assert_eq!(count, 2, "the stats and the closures' lines, once each");
}

#[test]
fn a_scope_without_inline_slots_allocates_only_for_its_first_closure() {
    let count = allocations_of(|| {
        let s: Scope<'_, 0> = Scope::default();
        assert_eq!(s.capacity(), 0);
        drop(s);
    });
    assert_eq!(count, 0);
    let count = allocations_of(|| {
        let s: Scope<'_, 0> = Scope::default();
        for _ in 0..4 {
            s.defer(|| ());
        }
        assert!(s.spilled());
    });
    assert_eq!(count, 1, "one segment of four slots");
}

#[test]
fn growth_adds_segments_and_never_reallocates() {
    // A reallocation would be counted here, and would move the slots: the held value is
    // written through its reference after the growth and read back by its cleanup (Miri
    // checks the same test for dangling references).
    let seen = Cell::new(0);
    let count = allocations_of(|| {
        let s: Scope<'_> = Scope::new();
        let first = s.hold(0u64, |value| seen.set(value));
        for _ in 0..1000 {
            s.defer(|| ());
        }
        *first = 7;
    });
    assert_eq!(
        count, 7,
        "8 inline, then segments of 8, 16, ..., 512: no reallocation"
    );
    assert_eq!(seen.get(), 7);
}

#[test]
fn every_scope_frees_what_it_allocated() {
    let sum = &Cell::new(0);
    let large = [1u64; 8];
    // Heap segments, boxed closures, extras (stats, a handler, fallible closures), `take`,
    // `dismiss`, and a loop that sets a caller's closures aside and puts them back.
    let leaked = leaked_by(|| {
        let mut s: Scope<'_, 2> = Scope::default();
        s.track_stats();
        s.set_error_handler(|_| ());
        for _ in 0..100 {
            s.defer(small_closure(sum, 1, 2));
        }
        s.defer(move || sum.set(sum.get() + large[7])); // boxed: 64 bytes of captures
        s.defer_fallible(|| Err("handled"));
        let taken = s.take();
        s.defer(small_closure(sum, 3, 4));
        s.dismiss();
        assert_eq!(taken.finish().unwrap_err().len(), 1);
        s.defer_on_error(|| ());
        for_each_scoped_in_place(&mut s);
        drop(s);
    });
    assert_eq!(leaked, 0, "blocks left allocated");
}

fn for_each_scoped_in_place(s: &mut Scope<'_, 2>) {
    scoped_defer::for_each_scoped_in(s, 0..10, |s, _| {
        for _ in 0..5 {
            s.defer(|| ());
        }
    });
}

/// Polls a future that never waits, on this thread (the counters are per thread).
#[cfg(feature = "std")]
fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let context = &mut std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the futures here never wait"),
    }
}

#[cfg(feature = "std")]
#[test]
fn an_async_scope_allocates_once_per_future_and_never_for_sync_closures_or_small_holds() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use scoped_defer::AsyncScope;

    let sum = Arc::new(AtomicU64::new(0));
    let scope = AsyncScope::new();
    // Registration: nothing for sync closures and a held value of two words, up to the 8
    // inline slots (6 + 1 + 1 here).
    let registering = allocations_of(|| {
        for i in 0..6 {
            let sum = Arc::clone(&sum);
            scope.defer(move || {
                sum.fetch_add(i, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(registering, 0);
    let for_held = Arc::clone(&sum);
    let holding = allocations_of(|| {
        *scope.hold_async(for_held, |sum| async move {
            sum.fetch_add(100, Ordering::Relaxed);
        }) = Arc::clone(&sum);
    });
    assert_eq!(holding, 0);
    // Each future: one box, however big it is.
    let for_future = Arc::clone(&sum);
    let deferring = allocations_of(|| {
        let big = [1_u64; 16];
        scope.defer_async(async move {
            for_future.fetch_add(big.iter().sum(), Ordering::Relaxed);
        });
    });
    assert_eq!(deferring, 1, "one box for the future");
    // The end: the held value's future is boxed then; nothing else allocates, and every
    // block is freed.
    let (mut finishing, mut leaked) = (0, 0);
    leaked += leaked_by(|| finishing = allocations_of(|| run_ready(scope.finish()).unwrap()));
    assert_eq!(finishing, 1, "the held value's future");
    assert_eq!(
        leaked, -1,
        "the registered future's box freed; the held one's made and freed"
    );
    assert_eq!(sum.load(Ordering::Relaxed), 15 + 100 + 16);
}
