//! Handles to single entries: `defer_entry`, `hold_entry`, `Entry::cancel`/`run_now`,
//! `Held::release`/`run_now`, on inline, spilled, loop-set-aside and taken storage, checked
//! with drop counters (every capture dropped exactly once) and the order of the rest.

mod common;

use std::cell::{Cell, RefCell};

use common::{Event, Events, catch_expected, quiet_panics};
use scoped_defer::{Entry, Held, Scope, SendScope, for_each_scoped_in};

/// What to do with the entry of id `i`, in a scope that first holds `before` plain closures.
#[derive(Clone, Copy, Debug)]
enum Op {
    Cancel,
    RunNow,
    Release,
    HeldRunNow,
    Keep,
}

/// A handle to a closure, or to a held value.
type Handle<'a, 'env, const N: usize> =
    Result<Entry<'a, Scope<'env, N>>, Held<'a, common::Token, Scope<'env, N>>>;

/// Registers `total` closures (ids 0..total) on `scope`, of which those in `entries` through
/// handles, then applies `op` to each of those handles, last registered first or first
/// registered first; returns the ids consumed early, in order, and checks `len` as it goes.
fn exercise<const N: usize>(
    scope: &Scope<'_, N>,
    events: &Events,
    total: u32,
    entries: &[u32],
    op: Op,
    reverse: bool,
) -> Vec<u32> {
    let released = RefCell::new(Vec::new());
    let mut handles: Vec<(u32, Handle<'_, '_, N>)> = Vec::new();
    for id in 0..total {
        let token = events.token(id);
        if !entries.contains(&id) {
            scope.defer(move || token.ran());
        } else if matches!(op, Op::Release | Op::HeldRunNow) {
            handles.push((id, Err(scope.hold_entry(token, |token| token.ran()))));
        } else {
            handles.push((id, Ok(scope.defer_entry(move || token.ran()))));
        }
    }
    assert_eq!(scope.len(), total as usize);
    if reverse {
        handles.reverse();
    }
    let mut consumed = Vec::new();
    for (id, handle) in handles {
        let before = scope.len();
        match (op, handle) {
            (Op::Cancel, Ok(entry)) => entry.cancel(),
            (Op::RunNow, Ok(entry)) => entry.run_now(),
            (Op::Release, Err(held)) => {
                assert_eq!(held.id, id, "the handle derefs to its own value");
                released.borrow_mut().push(Held::release(held));
            }
            (Op::HeldRunNow, Err(held)) => Held::run_now(held),
            (Op::Keep, _) => continue,
            (op, _) => unreachable!("{op:?}"),
        }
        consumed.push(id);
        assert_eq!(scope.len(), before - 1, "len counts only pending closures");
    }
    // Released values are the caller's: dropped here, once.
    drop(released);
    consumed
}

/// The expected events once the scope has ended: the early ones in their order, then every
/// other closure, last registered first.
fn expected(total: u32, consumed: &[u32], op: Op) -> Vec<Event> {
    let mut events = Vec::new();
    for &id in consumed {
        if matches!(op, Op::RunNow | Op::HeldRunNow) {
            events.push(Event::Ran(id));
        }
        if !matches!(op, Op::Release) {
            events.push(Event::Dropped(id));
        }
    }
    if matches!(op, Op::Release) {
        for &id in consumed {
            events.push(Event::Dropped(id));
        }
    }
    for id in (0..total).rev().filter(|id| !consumed.contains(id)) {
        events.push(Event::Ran(id));
        events.push(Event::Dropped(id));
    }
    events
}

const OPS: [Op; 5] = [
    Op::Cancel,
    Op::RunNow,
    Op::Release,
    Op::HeldRunNow,
    Op::Keep,
];

/// Entry patterns: the last one, the first one, every other one, all of them, a middle run.
fn patterns(total: u32) -> Vec<Vec<u32>> {
    vec![
        vec![total - 1],
        vec![0],
        (0..total).step_by(2).collect(),
        (0..total).collect(),
        (total / 3..2 * total / 3).collect(),
    ]
}

#[test]
fn every_operation_on_inline_and_spilled_storage_consumes_once_in_order() {
    for total in [3, 4, 9, 40] {
        for entries in patterns(total) {
            for op in OPS {
                for reverse in [false, true] {
                    let events = Events::new();
                    let scope: Scope<'_, 4> = Scope::default();
                    let consumed = exercise(&scope, &events, total, &entries, op, reverse);
                    drop(scope);
                    assert_eq!(
                        events.all(),
                        expected(total, &consumed, op),
                        "{total} closures, entries {entries:?}, {op:?}, reverse {reverse}"
                    );
                    events.assert_each_dropped_once(0..total);
                }
            }
        }
    }
}

#[test]
fn storage_set_aside_by_a_loop_and_taken_behaves_alike() {
    for op in OPS {
        // Set aside: the caller's closures wait while the loop runs, then run with the scope.
        let events = Events::new();
        let mut scope: Scope<'_, 4> = Scope::default();
        let consumed = exercise(&scope, &events, 6, &[1, 3, 5], op, false);
        let inner = Events::new();
        for_each_scoped_in(&mut scope, 0..3, |s, round| {
            let consumed = exercise(s, &inner, 6, &[0, 2, 4], op, round % 2 == 1);
            assert_eq!(consumed.len(), if matches!(op, Op::Keep) { 0 } else { 3 });
        });
        drop(scope);
        assert_eq!(
            events.all(),
            expected(6, &consumed, op),
            "{op:?}, set aside"
        );
        events.assert_each_dropped_once(0..6);

        // Taken: the vacant slots move with the closures.
        let events = Events::new();
        let mut scope: Scope<'_, 4> = Scope::default();
        let consumed = exercise(&scope, &events, 7, &[0, 2, 4], op, false);
        let taken = scope.take();
        assert!(scope.is_empty());
        assert_eq!(taken.len(), 7 - consumed.len());
        drop(scope);
        let early = events.all().len();
        drop(taken);
        assert_eq!(events.all(), expected(7, &consumed, op), "{op:?}, taken");
        assert!(events.all().len() > early || consumed.len() == 7);
    }
}

/// A pseudo-random mix of registrations, handles consumed out of order, and handles dropped,
/// against a model of the stack: every closure runs or is dropped once, the rest in LIFO
/// order, and `len` always agrees.
#[test]
fn a_random_mix_agrees_with_a_model() {
    let mut seed = 0x9e37_79b9_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..200 {
        let events = Events::new();
        let scope: Scope<'_, 4> = Scope::default();
        let mut live: Vec<(u32, Entry<'_, Scope<'_, 4>>)> = Vec::new();
        let mut pending: Vec<u32> = Vec::new();
        let mut early: Vec<Event> = Vec::new();
        for id in 0..(5 + next(40) as u32) {
            match next(4) {
                0 | 1 => {
                    let token = events.token(id);
                    live.push((id, scope.defer_entry(move || token.ran())));
                }
                _ => {
                    let token = events.token(id);
                    scope.defer(move || token.ran());
                }
            }
            pending.push(id);
            if !live.is_empty() && next(3) == 0 {
                let (id, entry) = live.remove(next(live.len() as u64) as usize);
                pending.retain(|&p| p != id);
                if next(2) == 0 {
                    entry.run_now();
                    early.extend([Event::Ran(id), Event::Dropped(id)]);
                } else {
                    entry.cancel();
                    early.push(Event::Dropped(id));
                }
            }
            if !live.is_empty() && next(5) == 0 {
                live.remove(next(live.len() as u64) as usize); // stays registered
            }
            assert_eq!(scope.len(), pending.len(), "round {round}");
        }
        drop(live);
        drop(scope);
        let mut expected = early;
        for &id in pending.iter().rev() {
            expected.extend([Event::Ran(id), Event::Dropped(id)]);
        }
        assert_eq!(events.all(), expected, "round {round}");
    }
}

#[test]
fn a_scope_reused_after_entries_left_holes_starts_clean() {
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    for round in 0..3 {
        let base = round * 10;
        let keep = events.token(base);
        scope.defer(move || keep.ran());
        let hole = events.token(base + 1);
        let entry = scope.defer_entry(move || hole.ran());
        let last = events.token(base + 2);
        scope.defer(move || last.ran());
        entry.cancel();
        assert_eq!(scope.len(), 2);
        scope.run_now();
        assert!(scope.is_empty());
    }
    assert_eq!(events.ran(), [2, 0, 12, 10, 22, 20]);
    events.assert_each_dropped_once([0, 1, 2, 10, 11, 12, 20, 21, 22]);
}

#[test]
fn a_panicking_entry_is_consumed_once_and_the_scope_stays_usable() {
    quiet_panics();
    let events = Events::new();
    let scope: Scope<'_, 2> = Scope::default();
    let first = events.token(0);
    scope.defer(move || first.ran());
    let token = events.token(1);
    let entry = scope.defer_entry(move || {
        token.ran();
        panic!("entry failed");
    });
    let after = events.token(2);
    scope.defer(move || after.ran());
    assert!(catch_expected(|| entry.run_now()).is_err());
    assert_eq!(scope.len(), 2);
    // A capture whose drop panics, cancelled: the panic propagates, the capture is gone.
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop failed");
        }
    }
    let bomb = PanicOnDrop;
    let entry = scope.defer_entry(move || drop(bomb));
    assert!(catch_expected(|| entry.cancel()).is_err());
    assert_eq!(scope.len(), 2);
    drop(scope);
    assert_eq!(events.ran(), [1, 2, 0]);
    events.assert_each_dropped_once(0..3);
}

/// With `std` only: without it, a scope cannot catch a panic (see the `std` feature).
#[cfg(feature = "std")]
#[test]
fn an_entry_consumed_while_unwinding_does_not_abort() {
    quiet_panics();
    let ran = Cell::new(false);
    let scope = Scope::new();
    let entry = scope.defer_entry(|| {
        ran.set(true);
        panic!("second panic");
    });
    // Consumed from a drop during an unwind: its panic is caught, not a double panic.
    struct RunOnDrop<'a, 'b>(Option<Entry<'a, Scope<'b>>>);
    impl Drop for RunOnDrop<'_, '_> {
        fn drop(&mut self) {
            self.0.take().expect("set").run_now();
        }
    }
    let result = catch_expected(|| {
        let _guard = RunOnDrop(Some(entry));
        panic!("first panic");
    });
    let message = result.unwrap_err();
    assert_eq!(message.downcast_ref::<&str>(), Some(&"first panic"));
    assert!(ran.get());
}

#[test]
fn stats_count_entries_and_see_the_high_water_mark() {
    let mut scope = Scope::with_stats();
    let entries: Vec<_> = (0..5).map(|_| scope.defer_entry(|| ())).collect();
    scope.defer(|| ());
    for (i, entry) in entries.into_iter().enumerate() {
        if i % 2 == 0 {
            entry.cancel()
        } else {
            entry.run_now()
        }
    }
    let stats = scope.stats().unwrap();
    assert_eq!((stats.pending, stats.high_water), (1, 6));
    assert_eq!((stats.ran, stats.dismissed), (2, 3));
    assert_eq!(stats.sites().iter().map(|s| s.pending).sum::<usize>(), 1);
    let busiest = &stats.sites()[0];
    assert_eq!((busiest.registered, busiest.pending_at_high_water), (5, 5));
    scope.run_now();
    let stats = scope.stats().unwrap();
    assert_eq!((stats.ran, stats.dismissed, stats.pending), (3, 3, 0));
}

#[test]
fn a_limit_counts_only_pending_closures() {
    let scope = Scope::with_limit(2);
    let first = scope.defer_entry(|| ());
    scope.defer(|| ());
    first.cancel(); // a vacant slot below a pending closure
    assert_eq!(scope.len(), 1);
    scope.try_defer(|| ()).unwrap();
    assert!(scope.try_defer(|| ()).is_err());
    // Two lines with one pending closure each: the cancelled one is not counted.
    let refused = scope.try_defer(|| ()).unwrap_err();
    assert_eq!(refused.busiest_site().map(|(_, n)| n), Some(1));
}

#[test]
fn send_scope_entries() {
    let events = Events::new();
    let count = std::sync::atomic::AtomicUsize::new(0);
    let scope = SendScope::new();
    let entry = scope.defer_entry(|| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let held = scope.hold_entry(vec![1, 2], |_| {
        count.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(Held::release(held), [1, 2]);
    entry.run_now();
    assert!(scope.is_empty());
    drop(scope);
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(events.all().is_empty());
}

#[test]
fn a_held_value_lent_out_stays_in_place_while_others_leave() {
    let scope: Scope<'_, 2> = Scope::default();
    let mut kept = scope.hold_entry(String::from("a"), drop);
    let others: Vec<_> = (0..6).map(|i| scope.hold_entry(i, drop)).collect();
    kept.push('b');
    for other in others.into_iter().rev() {
        assert!(*other < 6);
        Held::release(other);
    }
    kept.push('c');
    assert_eq!(scope.len(), 1);
    assert_eq!(Held::release(kept), "abc");
    assert!(scope.is_empty());
}

/// Stats begun after an entry was cancelled in a scope that never grew: the vacant slot is
/// no line's pending closure.
#[test]
fn stats_begun_after_a_cancel_do_not_count_the_vacant_slot() {
    let mut scope = Scope::new();
    let cancelled = scope.defer_entry(|| ());
    scope.defer(|| ());
    cancelled.cancel();
    scope.track_stats();
    let stats = scope.stats().unwrap();
    assert_eq!(stats.pending, 1);
    assert_eq!(
        stats.sites().iter().map(|site| site.pending).sum::<usize>(),
        1
    );
}

#[test]
fn handles_show_what_they_hold() {
    let scope = Scope::new();
    let entry = scope.defer_entry(|| ());
    let held = scope.hold_entry(5, drop);
    assert_eq!(format!("{entry:?}"), "Entry { .. }");
    assert_eq!(format!("{held:?}"), "Held(5)");
}

/// Cancelling the last entry shortens the storage and keeps the scope's settings: its limit
/// still refuses, and its stats still count every line.
#[test]
fn a_cancelled_last_entry_keeps_the_limit_and_the_stats() {
    let mut scope = Scope::with_limit(2);
    scope.track_stats();
    scope.defer(|| ());
    scope.defer_entry(|| ()).cancel();
    scope.defer(|| ());
    assert_eq!(scope.len(), 2);
    assert!(scope.try_defer(|| ()).is_err(), "the limit still applies");
    let stats = scope.stats().expect("stats still tracked");
    assert_eq!(stats.pending, 2);
    let registered: u64 = stats.sites().iter().map(|site| site.registered).sum();
    assert_eq!(registered, 3, "every registration counted");
}
