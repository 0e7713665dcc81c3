//! The lines of the closures live with the closures: whatever a loop body does with the scope
//! it is lent (start stats or a limit, replace it), no closure is lost, run twice or left
//! unreported, nothing aborts, and the stats and the limit's message stay exact.
//!
//! Every scenario here used to abort the process (or lose a cleanup): each runs in a child
//! process, so that a regression fails one test instead of taking the test binary down.
mod common;

use std::cell::Cell;

use common::{in_child, quiet_panics};
use scoped_defer::{Scope, for_each_scoped, for_each_scoped_in, scope, try_for_each_scoped_in};

/// A counter of runs shared by the closures of one test.
fn bump(counter: &Cell<u32>) {
    counter.set(counter.get() + 1);
}

/// Checks that `scope`, which tracks sites, still works in every way after a loop: its stats,
/// `try_defer`, `dismiss`, `take` and `run_now`.
fn still_works(scope: &mut Scope<'_>) {
    let stats = scope.stats();
    let line = line!() + 1;
    scope.try_defer(|| ()).unwrap();
    if let Some(stats) = stats {
        assert_eq!(scope.stats().unwrap().registered, stats.registered + 1);
        let sites = scope.stats().unwrap();
        assert!(sites.sites().iter().any(|s| s.location.line() == line));
    }
    scope.dismiss();
    scope.defer(|| ());
    drop(scope.take());
    scope.defer(|| ());
    scope.run_now();
    assert!(scope.is_empty());
}

#[test]
fn stats_started_in_a_loop_body_keep_the_callers_closures() {
    in_child(
        "stats_started_in_a_loop_body_keep_the_callers_closures",
        || {
            for limit in [false, true] {
                let (earlier, inner) = (Cell::new(0), Cell::new(0));
                let mut s = Scope::new();
                s.defer(|| bump(&earlier));
                s.defer(|| bump(&earlier));
                let started = line!() + if limit { 3 } else { 5 };
                for_each_scoped_in(&mut s, 0..3, |s, _| {
                    if limit {
                        s.set_limit(10);
                    } else {
                        s.track_stats();
                    }
                    s.defer(|| bump(&inner));
                });
                assert_eq!((earlier.get(), inner.get()), (0, 3));
                assert_eq!(s.len(), 2, "the caller's closures are back");
                if limit {
                    s.set_limit(3);
                    s.defer(|| ());
                    let refused = s.try_defer(|| ()).unwrap_err();
                    // The caller's two closures, put down to the line where tracking began.
                    assert_eq!(
                        refused.busiest_site().map(|(line, n)| (line.line(), n)),
                        Some((started, 2))
                    );
                    assert!(
                        refused.to_string().contains("limit of 3 pending closures"),
                        "{refused}"
                    );
                    s.dismiss();
                    s.defer(|| bump(&earlier));
                    s.defer(|| bump(&earlier));
                } else {
                    let stats = s.stats().unwrap();
                    assert_eq!((stats.ran, stats.pending, stats.registered), (3, 2, 5));
                    // The caller's closures are put down to the line where tracking began.
                    let row = stats
                        .sites()
                        .iter()
                        .find(|site| site.location.line() == started)
                        .unwrap();
                    assert_eq!((row.registered, row.pending), (2, 2));
                }
                s.run_now();
                assert_eq!(earlier.get(), 2, "the earlier cleanups ran, once");
                still_works(&mut s);
                assert_eq!(earlier.get(), 2);
            }
        },
    );
}

#[test]
fn stats_started_in_a_try_loop_body_keep_the_callers_closures() {
    in_child(
        "stats_started_in_a_try_loop_body_keep_the_callers_closures",
        || {
            let earlier = Cell::new(0);
            let mut s = Scope::new();
            s.defer(|| bump(&earlier));
            let result = try_for_each_scoped_in(&mut s, 0..4, |s, i| {
                s.track_stats();
                s.set_limit(4);
                s.defer(|| ());
                if i == 2 { Err("stop") } else { Ok(()) }
            });
            assert_eq!(result.unwrap_err().body_error(), Some(&"stop"));
            assert_eq!((earlier.get(), s.len()), (0, 1));
            assert_eq!(s.stats().unwrap().ran, 3);
            drop(s);
            assert_eq!(earlier.get(), 1);
        },
    );
}

/// Inside the function forms and the loop helpers, which used to abort even in release.
#[test]
fn stats_started_in_nested_loops_do_not_abort() {
    in_child("stats_started_in_nested_loops_do_not_abort", || {
        let runs = Cell::new(0);
        let total = scope(|s| {
            s.defer(|| bump(&runs));
            for_each_scoped_in(s, 0..3, |s, _| {
                s.track_stats();
                s.defer(|| bump(&runs));
            });
            s.set_limit(5);
            for_each_scoped_in(s, 0..3, |s, _| {
                s.set_limit(1);
                s.defer(|| bump(&runs));
            });
            s.stats().unwrap().ran
        });
        assert_eq!((total, runs.get()), (6, 7));
        for_each_scoped(0..3, |s, _| {
            s.defer(|| bump(&runs));
            for_each_scoped_in(s, 0..2, |s, _| {
                s.track_stats();
                s.defer(|| bump(&runs));
            });
            assert_eq!(s.stats().unwrap().pending, 1);
        });
        assert_eq!(runs.get(), 7 + 3 * 3);
    });
}

/// A body that panics after starting stats: the caller's closures still run once.
#[test]
fn a_panicking_body_that_started_stats_loses_nothing() {
    quiet_panics();
    in_child("a_panicking_body_that_started_stats_loses_nothing", || {
        let runs = Cell::new(0);
        let mut s = Scope::new();
        s.defer(|| bump(&runs));
        let panicked = common::catch_expected(|| {
            for_each_scoped_in(&mut s, 0..3, |s, i| {
                s.set_limit(3);
                s.defer(|| bump(&runs));
                assert!(i < 1, "the body fails");
            });
        });
        assert!(panicked.is_err());
        assert_eq!((runs.get(), s.len()), (2, 1));
        drop(s);
        assert_eq!(runs.get(), 3);
    });
}

/// Replacing the lent scope: the replacement's settings apply to the closures put back.
#[test]
fn a_body_that_replaces_its_scope_gets_the_callers_closures_back() {
    in_child(
        "a_body_that_replaces_its_scope_gets_the_callers_closures_back",
        || {
            let (earlier, inner) = (Cell::new(0), Cell::new(0));
            let mut s = Scope::with_limit(100);
            s.defer(|| bump(&earlier));
            for_each_scoped_in(&mut s, 0..3, |s, i| {
                s.defer(|| bump(&inner));
                match i {
                    0 => *s = Scope::new(),
                    1 => drop(std::mem::take(s)),
                    _ => {
                        let mut other = Scope::with_stats();
                        other.defer(|| bump(&inner));
                        std::mem::swap(s, &mut other);
                    }
                }
            });
            assert_eq!((earlier.get(), inner.get()), (0, 4));
            // The scope in place is the last replacement, with its stats and no limit.
            assert_eq!(s.limit(), None);
            assert_eq!(s.len(), 1);
            assert!(s.stats().is_some());
            s.run_now();
            assert_eq!(earlier.get(), 1);
            still_works(&mut s);
            assert_eq!(earlier.get(), 1);
        },
    );
}

#[cfg(feature = "rayon")]
#[test]
fn stats_started_by_parallel_items_do_not_abort() {
    in_child("stats_started_by_parallel_items_do_not_abort", || {
        let runs = std::sync::atomic::AtomicU32::new(0);
        let bump = || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        scoped_defer::par_for_each_scoped(0..64, |s, i| {
            s.defer(bump);
            for_each_scoped_in(s, 0..2, |s, _| {
                s.track_stats();
                s.set_limit(4);
                s.defer(bump);
            });
            if i % 2 == 0 {
                s.track_stats();
            }
        });
        assert_eq!(runs.into_inner(), 64 * 3);
    });
}
