//! The process-wide profile: every kind of scope, created with no option, is counted; counts
//! add up across threads; closures leave the report whenever they leave their storage; the
//! sampled mode estimates within its stated error.
//!
//! The profile is global: the tests take one lock, so that none of them enables or disables
//! it under another, and each looks only at the lines it registers from.
#![cfg(feature = "std")]

mod common;

use common::block_on;

use std::sync::{Barrier, Mutex, MutexGuard};

use scoped_defer::{
    AsyncScope, Scope, SendScope, for_each_scoped, for_each_scoped_in, profile, scope, try_scope,
};

static PROFILE: Mutex<()> = Mutex::new(());

/// Takes the profile for this test, exact.
fn exact() -> MutexGuard<'static, ()> {
    let guard = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
    profile::enable();
    guard
}

/// Closures pending at `line` of this file, in the report now.
fn pending_at(line: u32) -> usize {
    profile::report()
        .sites()
        .iter()
        .filter(|site| site.location.file() == file!() && site.location.line() == line)
        .map(|site| site.pending)
        .sum()
}

/// How many closures a pile-up registers: past any scope's inline slots.
const PILE: usize = 100;

#[test]
fn every_kind_of_scope_is_counted_with_no_option() {
    let _profile = exact();

    let plain = Scope::new();
    let line = line!() + 2;
    for i in 0..PILE {
        plain.defer(move || assert!(i < PILE));
    }
    assert_eq!(pending_at(line), PILE, "Scope");
    drop(plain);
    assert_eq!(pending_at(line), 0);

    let sendable = SendScope::new();
    let line = line!() + 2;
    for i in 0..PILE {
        sendable.defer(move || assert!(i < PILE));
    }
    let sendable = std::thread::spawn(move || sendable).join().unwrap();
    assert_eq!(pending_at(line), PILE, "SendScope, moved to another thread");
    std::thread::spawn(move || drop(sendable)).join().unwrap();
    assert_eq!(pending_at(line), 0);

    let line = line!() + 3;
    scope(|s| {
        for i in 0..PILE {
            s.defer(move || assert!(i < PILE));
        }
        assert_eq!(pending_at(line), PILE, "scope()");
    });
    assert_eq!(pending_at(line), 0);

    let line = line!() + 3;
    try_scope(|s| {
        for i in 0..PILE {
            s.defer(move || assert!(i < PILE));
        }
        assert_eq!(pending_at(line), PILE, "try_scope()");
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(pending_at(line), 0);

    // A pile-up inside one iteration of a loop helper, and one across the iterations of a
    // loop that defers into the caller's scope.
    let line = line!() + 3;
    for_each_scoped(0..3, |s, item| {
        for i in 0..PILE {
            s.defer(move || assert!(i < PILE));
        }
        assert_eq!(pending_at(line), PILE, "for_each_scoped, item {item}");
    });
    assert_eq!(pending_at(line), 0);
    let function_wide = Scope::new();
    let line = line!() + 2;
    for_each_scoped(0..PILE, |_, i| {
        function_wide.defer(move || assert!(i < PILE));
    });
    assert_eq!(pending_at(line), PILE, "the Go mistake, in a loop helper");
    drop(function_wide);
    assert_eq!(pending_at(line), 0);

    let async_scope = AsyncScope::new();
    let (sync_line, async_line) = (line!() + 2, line!() + 5);
    for i in 0..PILE {
        async_scope.defer(move || assert!(i < PILE));
    }
    for i in 0..PILE {
        async_scope.defer_async(async move { assert!(i < PILE) });
    }
    assert_eq!(
        (pending_at(sync_line), pending_at(async_line)),
        (PILE, PILE),
        "AsyncScope"
    );
    block_on(async_scope.finish()).unwrap();
    assert_eq!((pending_at(sync_line), pending_at(async_line)), (0, 0));
}

#[cfg(feature = "rayon")]
#[test]
fn parallel_workers_are_counted() {
    let _profile = exact();
    let registered = Barrier::new(2);
    let line = line!() + 5;
    std::thread::scope(|threads| {
        threads.spawn(|| {
            scoped_defer::par_for_each_scoped(0..1, |s, _| {
                for i in 0..PILE {
                    s.defer(move || assert!(i < PILE));
                }
                registered.wait();
                registered.wait();
            });
        });
        registered.wait();
        assert_eq!(pending_at(line), PILE);
        registered.wait();
    });
    assert_eq!(pending_at(line), 0);
}

#[test]
fn the_report_adds_up_the_scopes_of_every_thread_and_empties_as_they_end() {
    let _profile = exact();
    const THREADS: usize = 4;
    let (registered, checked) = (Barrier::new(THREADS + 1), Barrier::new(THREADS + 1));
    let (pile, once) = (line!() + 7, line!() + 9);
    let report = std::thread::scope(|threads| {
        for t in 0..THREADS {
            let (registered, checked) = (&registered, &checked);
            threads.spawn(move || {
                let scope = Scope::new();
                for _ in 0..10 * (t + 1) {
                    scope.defer(|| ());
                }
                scope.defer(|| ());
                registered.wait();
                checked.wait();
            });
        }
        registered.wait();
        let report = profile::report();
        checked.wait();
        report
    });
    let rows: Vec<(u32, usize)> = report
        .sites()
        .iter()
        .filter(|site| site.location.file() == file!())
        .map(|site| (site.location.line(), site.pending))
        .collect();
    assert_eq!(rows, [(pile, 10 + 20 + 30 + 40), (once, THREADS)]);
    assert!(!report.is_estimate());
    let folded = report.folded();
    for (line, count) in [(pile, 100), (once, THREADS)] {
        let row = format!("scoped_defer;{}:{line}:", file!());
        assert!(
            folded
                .lines()
                .any(|l| l.starts_with(&row) && l.ends_with(&format!(" {count}"))),
            "{folded}"
        );
    }
    let printed = report.to_string();
    assert!(
        printed.contains(" closures pending, registered at "),
        "{printed}"
    );
    assert_eq!(
        (pending_at(pile), pending_at(once)),
        (0, 0),
        "every scope ended"
    );
}

#[test]
fn closures_leave_the_report_when_they_leave_their_storage() {
    let _profile = exact();
    common::quiet_panics();
    let line = line!() + 3;
    let fill = |scope: &Scope<'_, 2>| {
        for _ in 0..5 {
            scope.defer(|| ());
        }
    };
    let mut scope: Scope<'_, 2> = Scope::default();
    fill(&scope);
    assert_eq!(pending_at(line), 5);
    // Taken closures are still pending, in the scope that took them.
    let taken = scope.take();
    assert_eq!(pending_at(line), 5);
    drop(taken);
    assert_eq!(pending_at(line), 0);
    fill(&scope);
    scope.dismiss();
    assert_eq!(pending_at(line), 0, "dismissed");
    fill(&scope);
    scope.defer(|| panic!("cleanup failed"));
    let panicked = common::catch_expected(|| scope.run_now());
    assert!(panicked.is_err());
    assert_eq!(pending_at(line), 0, "a panicking drain");
    // Set aside by a loop, and put back.
    fill(&scope);
    for_each_scoped_in(&mut scope, 0..3, |s, _| fill(s));
    assert_eq!(pending_at(line), 5, "set aside and put back");
    scope.run_now();
    assert_eq!(pending_at(line), 0);
    // Disabled while counted: what was counted still leaves, nothing more is counted.
    fill(&scope);
    profile::disable();
    fill(&scope);
    assert_eq!(pending_at(line), 5);
    profile::enable();
    fill(&scope);
    // Counting resumes when the scope next grows.
    assert!((5..=10).contains(&pending_at(line)), "{}", pending_at(line));
    scope.run_now();
    assert_eq!(pending_at(line), 0);
    fill(&scope);
    assert_eq!(pending_at(line), 5);
    drop(scope);
    assert_eq!(pending_at(line), 0);
}

/// A loop body that replaces the scope it was lent, with closures counted on both sides.
#[test]
fn a_replaced_loop_scope_leaves_no_count_behind() {
    let _profile = exact();
    let line = line!() + 3;
    let fill = |scope: &Scope<'_, 2>| {
        for _ in 0..5 {
            scope.defer(|| ());
        }
    };
    let mut kept = Vec::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    fill(&scope);
    for_each_scoped_in(&mut scope, 0..4, |s, i| {
        fill(s);
        match i {
            0 => *s = Scope::default(),
            1 => drop(std::mem::take(s)),
            2 => kept.push(std::mem::take(s)),
            _ => {
                let mut other = Scope::default();
                fill(&other);
                std::mem::swap(s, &mut other);
            }
        }
    });
    assert_eq!(
        pending_at(line),
        5 + 5,
        "the caller's, and the kept scope's"
    );
    drop(kept);
    assert_eq!(pending_at(line), 5);
    drop(scope);
    assert_eq!(pending_at(line), 0);
}

#[test]
fn a_sampled_profile_estimates_within_its_error() {
    let _profile = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
    // The relative standard error is sqrt(period / pending): 5.7% for the pile-up, 18% for
    // the smaller line at the default period. The bounds are five standard errors wide: a
    // false failure is rarer than one run in a million.
    let (period, pile, small) = if cfg!(miri) {
        (16, 4_000, 400)
    } else {
        (profile::DEFAULT_SAMPLE_PERIOD, 40_000, 4_000)
    };
    profile::enable_sampled(period);
    let scope = Scope::new();
    let (pile_line, small_line) = (line!() + 2, line!() + 4);
    for i in 0..pile {
        scope.defer(move || assert!(i < pile));
        if i % 10 == 0 {
            scope.defer(move || assert!(i < pile));
        }
    }
    let report = profile::report();
    profile::disable();
    assert!(report.is_estimate());
    assert!(report.to_string().contains("estimated"), "{report}");
    for (line, pending) in [(pile_line, pile), (small_line, small)] {
        let estimate = pending_at(line) as f64;
        let error = 5.0 * (period as f64 / pending as f64).sqrt();
        assert!(
            (estimate / pending as f64 - 1.0).abs() < error,
            "line {line}: {estimate} for {pending}"
        );
        assert_eq!(pending_at(line) % period, 0, "whole samples");
    }
    assert_eq!(report.sites()[0].location.line(), pile_line, "{report}");
    drop(scope);
    assert_eq!((pending_at(pile_line), pending_at(small_line)), (0, 0));
}

/// A limited scope under the exact profile: its pile-up is counted, and still refused at the
/// limit (the profile's short path is only for scopes without stats or a limit).
#[test]
fn a_limit_holds_under_the_exact_profile() {
    let _profile = exact();
    common::quiet_panics();
    let scope = Scope::with_limit(20);
    let line = line!() + 2;
    for i in 0..20 {
        scope.defer(move || assert!(i < 20));
    }
    assert_eq!(pending_at(line), 20);
    assert!(scope.try_defer(|| ()).is_err(), "the 21st is refused");
    assert!(common::catch_expected(|| scope.defer(|| ())).is_err());
    assert_eq!(scope.len(), 20);
    drop(scope);
    assert_eq!(pending_at(line), 0);
}

/// A scope with stats or a limit that was registering on its fast path when the profile
/// started is counted from its next growth, as a plain one is, and every closure it holds then
/// is in the count: none slips past while its earlier bound stands.
#[test]
fn a_tracked_scope_is_counted_in_full_when_the_profile_starts_midway() {
    let _profile = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
    profile::disable();
    for scope in [Scope::with_stats(), Scope::with_limit(1_000)] {
        let line = line!() + 2;
        let pile = |scope: &Scope<'_>, n: usize| {
            (0..n).for_each(|i| scope.defer(move || assert!(i < PILE)));
        };
        pile(&scope, 3); // inline, the fast bound set for this line
        profile::enable();
        pile(&scope, 3);
        assert_eq!(pending_at(line), 0, "inline: not counted yet");
        pile(&scope, PILE - 6);
        assert_eq!(pending_at(line), PILE, "every closure, from the growth on");
        drop(scope);
        assert_eq!(pending_at(line), 0);
        profile::disable();
    }
}

/// Entries consumed early leave the report at once, whether their slot is left vacant or
/// dropped from the storage, exact or sampled; none is counted twice when the scope ends.
#[test]
fn entries_consumed_early_leave_the_report() {
    let _profile = exact();
    for period in [1, 4] {
        if period > 1 {
            profile::enable_sampled(period);
        }
        let scope = Scope::new();
        let line = line!() + 1;
        let entries: Vec<_> = (0..PILE).map(|_| scope.defer_entry(|| ())).collect();
        let counted = pending_at(line);
        if period == 1 {
            assert_eq!(counted, PILE);
        }
        for (i, entry) in entries.into_iter().enumerate() {
            if i % 3 == 0 {
                entry.cancel();
            } else if i % 3 == 1 {
                entry.run_now();
            }
        }
        let left = pending_at(line);
        assert!(left <= counted, "period {period}");
        if period == 1 {
            assert_eq!(left, PILE / 3, "the kept entries");
        }
        drop(scope);
        assert_eq!(
            pending_at(line),
            0,
            "period {period}: nothing counted twice or left"
        );
    }
    profile::enable();
}

/// A scope that entries shrink back within its inline slots is counted no more, as one that
/// never grew past them (nothing is kept for the closures that left, and its storage is
/// freed when it ends); when it grows again it is counted anew, exactly.
#[test]
fn a_scope_shrunk_back_inline_by_entries_is_counted_anew() {
    let _profile = exact();
    {
        let s = Scope::new();
        let line = line!() + 1;
        let mut entries: Vec<_> = (0..9).map(|_| Some(s.defer_entry(|| ()))).collect();
        assert_eq!(pending_at(line), 9);
        for entry in entries[1..].iter_mut().rev() {
            entry.take().unwrap().cancel();
        }
        assert_eq!((s.len(), pending_at(line)), (1, 0));
        drop(entries);
    }

    let s = Scope::new();
    let first = line!() + 1;
    let mut entries: Vec<_> = (0..20).map(|_| Some(s.defer_entry(|| ()))).collect();
    for entry in entries[3..].iter_mut().rev() {
        entry.take().unwrap().cancel();
    }
    assert_eq!((s.len(), pending_at(first)), (3, 0));
    let again = line!() + 1;
    let later: Vec<_> = (0..20).map(|_| s.defer_entry(|| ())).collect();
    assert_eq!(
        pending_at(first) + pending_at(again),
        s.len(),
        "all counted again"
    );
    for entry in later.into_iter().step_by(3) {
        entry.cancel();
    }
    assert_eq!(pending_at(first) + pending_at(again), s.len());
    drop(entries);
    drop(s);
    assert_eq!(pending_at(first) + pending_at(again), 0);
}

/// Entries popped from the top of a counted scope: the slots registered again are counted
/// again, while the profile is on, and after it was off and on again.
#[test]
fn slots_registered_again_after_a_pop_are_counted() {
    let _profile = exact();
    let s = Scope::new();
    let line = line!() + 1;
    let mut entries: Vec<_> = (0..20).map(|_| Some(s.defer_entry(|| ()))).collect();
    // The last one leaves last: five slots leave the storage at once, four of them vacant.
    for entry in entries[15..].iter_mut() {
        entry.take().unwrap().cancel();
    }
    let again = line!() + 1;
    let more: Vec<_> = (0..10).map(|_| s.defer_entry(|| ())).collect();
    assert_eq!(pending_at(line) + pending_at(again), s.len());
    assert_eq!(s.len(), 25);

    profile::disable();
    // Registered while the profile is off: not counted, and counting pauses here.
    let unseen = s.defer_entry(|| ());
    unseen.cancel();
    for entry in more.into_iter().skip(5).rev() {
        entry.cancel();
    }
    profile::enable();
    // Paused: the storage is counted again from its next growth on (here a new segment).
    let last = line!() + 1;
    let _last: Vec<_> = (0..20).map(|_| s.defer_entry(|| ())).collect();
    assert_eq!(pending_at(line) + pending_at(again), 20);
    assert!((1..20).contains(&pending_at(last)), "{}", pending_at(last));
    drop(entries);
}

/// Registers `n` closures on `scope`, all from one line: [`PILE_LINE`].
fn pile<const N: usize>(scope: &Scope<'_, N>, n: usize) {
    for _ in 0..n {
        scope.defer(|| ()); // PILE_LINE
    }
}

/// The line of `pile`'s `defer`.
const PILE_LINE: u32 = line!() - 5;

/// The last slot, registered while the profile was paused, leaves just past a counted one:
/// the next ones, registered on the fast path, must not be put down to the counted line.
/// Before: they were, so their line's count went below zero when they left (witnessed here by
/// closures of the same line that stay pending), for the rest of the process.
#[test]
fn slots_registered_unseen_after_a_pop_are_not_put_down_to_the_counted_line() {
    let _profile = exact();
    let witness: Scope<'_, 1> = Scope::default();
    pile(&witness, PILE);
    assert_eq!(pending_at(PILE_LINE), PILE);
    // The profile lock keeps other tests' scopes out: the witness is all there is.
    assert_eq!(profile::report().total(), PILE);

    // Paused: slot 12 lies inside a segment, registered unseen, then leaves.
    let mut scope: Scope<'_, 1> = Scope::default();
    pile(&scope, 12);
    assert_eq!(pending_at(PILE_LINE), PILE + 12);
    profile::disable();
    scope.defer_entry(|| ()).cancel();
    // Slot 12 again, then four more, all on the fast path; one leaves from the middle.
    let middle = scope.defer_entry(|| ());
    pile(&scope, 4);
    middle.cancel();
    assert_eq!(scope.len(), 16);
    assert_eq!(
        pending_at(PILE_LINE),
        PILE + 12,
        "none of the new ones is counted"
    );
    scope.run_now();
    assert_eq!(pending_at(PILE_LINE), PILE);
    drop(scope);

    profile::enable();
    drop(witness);
    assert_eq!(pending_at(PILE_LINE), 0);
}

/// Counting begins at a growth while a slot below is vacant: the closures pending then are
/// put down to the line of the first one counted, the vacant slot not among them.
#[test]
fn counting_begins_with_the_pending_closures_not_the_vacant_slots() {
    let _profile = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
    profile::disable();
    let mut scope: Scope<'_, 1> = Scope::default();
    let mut entries: Vec<_> = (0..10).map(|_| Some(scope.defer_entry(|| ()))).collect();
    entries[5].take().unwrap().cancel();
    profile::enable();
    // Slots 10 to 19: counting begins at the growth to slot 16, over 15 pending closures.
    pile(&scope, 10);
    assert_eq!(scope.len(), 19);
    assert_eq!(pending_at(PILE_LINE), 19);
    drop(entries);
    scope.run_now();
    assert_eq!(pending_at(PILE_LINE), 0);
}

/// A storage remembers the profile's entry for the last line it counted, at one weight: once
/// the profile turns from exact to sampled, the next samples of that line go to the sampled
/// entry, and the report is an estimate. (Before, a remembered entry of another weight would
/// have been taken for it and the samples counted as exact.)
#[test]
fn the_samples_that_follow_exact_counts_are_weighed_as_samples() {
    let _profile = exact();
    assert!(!profile::report().is_estimate(), "no sample pending yet");
    let scope: Scope<'_, 1> = Scope::default();
    pile(&scope, 10);
    assert_eq!(pending_at(PILE_LINE), 10);
    assert!(!profile::report().is_estimate());
    // With a period of 2, at least one of 200 registrations is sampled but for a chance of
    // 2^-200.
    profile::enable_sampled(2);
    pile(&scope, 200);
    assert!(
        profile::report().is_estimate(),
        "the samples went to an entry of weight 1"
    );
    drop(scope);
    assert_eq!(pending_at(PILE_LINE), 0);
    assert!(!profile::report().is_estimate());
    profile::enable();
}
