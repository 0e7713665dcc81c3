//! Registration sites: which lines registered a tracked scope's closures (`Stats::sites`),
//! and the limit's message naming them.
mod common;

use std::panic::Location;

use common::{panic_message, quiet_panics};
use scoped_defer::{Scope, SiteStats, Stats, for_each_scoped_in, try_for_each_scoped_in};

/// `(line, registered, pending, pending at high water)` per site, in the order of `sites()`.
fn rows(stats: &Stats) -> Vec<(u32, u64, usize, usize)> {
    stats
        .sites()
        .iter()
        .map(|s: &SiteStats| {
            assert_eq!(s.location.file(), file!());
            (
                s.location.line(),
                s.registered,
                s.pending,
                s.pending_at_high_water,
            )
        })
        .collect()
}

#[test]
fn every_registration_method_records_its_callers_line() {
    let mut scope: Scope<'_, 2> = Scope::default();
    scope.track_stats();
    let first = line!() + 1;
    scope.defer(|| ());
    scope.try_defer(|| ()).unwrap();
    scope.defer_fallible(|| Ok::<_, std::io::Error>(()));
    scope.defer_on_error(|| ());
    scope.defer_on_success(|| ());
    *scope.hold(1, drop) += 1;
    *scope.hold_fallible(2, |_| Ok::<_, std::io::Error>(())) += 1;
    scoped_defer::defer!(scope => ());
    let stats = scope.stats().unwrap();
    let lines: Vec<u32> = stats.sites().iter().map(|s| s.location.line()).collect();
    assert_eq!(lines, (first..first + 8).collect::<Vec<_>>());
    assert!(
        stats
            .sites()
            .iter()
            .all(|s| s.pending == 1 && s.registered == 1)
    );
    scope.finish().unwrap();
}

#[test]
fn counts_by_site_across_run_now_dismiss_and_take() {
    let mut scope = Scope::with_stats();
    let (loop_line, once_line) = (line!() + 2, line!() + 4);
    for _ in 0..5 {
        scope.defer(|| ());
    }
    scope.defer(|| ());
    // Now: 5 + 1 pending, and the high-water mark is now.
    assert_eq!(
        rows(&scope.stats().unwrap()),
        [(loop_line, 5, 5, 5), (once_line, 1, 1, 1)]
    );
    scope.run_now();
    assert_eq!(
        rows(&scope.stats().unwrap()),
        [(loop_line, 5, 0, 5), (once_line, 1, 0, 1)]
    );
    // Fewer than the high-water mark: it keeps describing the first drain.
    let again = line!() + 1;
    scope.defer(|| ());
    scope.dismiss();
    let two = line!() + 2;
    for _ in 0..2 {
        scope.defer(|| ());
    }
    let taken = scope.take();
    let stats = scope.stats().unwrap();
    assert_eq!(
        rows(&stats),
        [
            (loop_line, 5, 0, 5),
            (once_line, 1, 0, 1),
            (two, 2, 0, 0),
            (again, 1, 0, 0)
        ]
    );
    assert_eq!((stats.dismissed, stats.taken, stats.high_water), (1, 2, 6));
    drop(taken);
    // A new high-water mark replaces the old composition.
    let pile = line!() + 2;
    for _ in 0..9 {
        scope.defer(|| ());
    }
    scope.run_now();
    assert_eq!(
        rows(&scope.stats().unwrap())[..2],
        [(pile, 9, 0, 9), (loop_line, 5, 0, 0)]
    );
}

#[test]
fn a_loop_over_a_tracked_scope_counts_each_iteration_and_keeps_the_callers_closures() {
    let mut scope = Scope::with_stats();
    let outer = line!() + 1;
    scope.defer(|| ());
    let inner = line!() + 3;
    for_each_scoped_in(&mut scope, 0..4, |s, i| {
        for _ in 0..=i {
            s.defer(|| ());
        }
    });
    let stats = scope.stats().unwrap();
    // The caller's closure was set aside and is pending again; the loop's biggest iteration
    // (4 closures) is the high-water mark.
    assert_eq!(rows(&stats), [(inner, 10, 0, 4), (outer, 1, 1, 0)]);
    assert_eq!((stats.pending, stats.high_water), (1, 4));
    let failing = line!() + 2;
    let result = try_for_each_scoped_in(&mut scope, 0..3, |s, i| {
        s.defer(|| ());
        if i == 1 { Err("stop") } else { Ok(()) }
    });
    assert!(result.is_err());
    let stats = scope.stats().unwrap();
    assert_eq!(rows(&stats)[1..], [(failing, 2, 0, 0), (outer, 1, 1, 0)]);
}

#[test]
fn closures_that_panic_are_counted_once_at_their_site() {
    quiet_panics();
    let mut scope = Scope::with_stats();
    let site = line!() + 2;
    for i in 0..3 {
        scope.defer(move || assert!(i != 1, "cleanup {i} failed"));
    }
    let message = panic_message(std::panic::AssertUnwindSafe(|| scope.run_now()));
    assert_eq!(message.as_deref(), Some("cleanup 1 failed"));
    let stats = scope.stats().unwrap();
    assert_eq!(rows(&stats), [(site, 3, 0, 3)]);
    // Without `std`, panics pass through the drain uncounted (there is no `catch_unwind`).
    assert_eq!(stats.panics, u64::from(cfg!(feature = "std")));
}

#[test]
fn closures_pending_when_tracking_begins_are_put_down_to_that_line() {
    let mut scope = Scope::new();
    scope.defer(|| ());
    scope.defer(|| ());
    let started = line!() + 1;
    scope.track_stats();
    assert_eq!(rows(&scope.stats().unwrap()), [(started, 2, 2, 2)]);
}

#[test]
fn the_limit_names_the_line_that_piles_up_and_the_refused_one() {
    quiet_panics();
    let scope = Scope::with_limit(3);
    let noise = line!() + 1;
    scope.defer(|| ());
    let pile = line!() + 2;
    for _ in 0..2 {
        scope.defer(|| ());
    }
    let refused = line!() + 1;
    let message = panic_message(|| scope.defer(|| ())).expect("a panic");
    let at = |line: u32| format!("{}:{line}:", file!());
    assert!(
        message.starts_with(&format!(
            "the scope already holds its limit of 3 pending closures, 2 of them registered at {}",
            at(pile)
        )),
        "{message}"
    );
    assert!(message.contains(&format!(
        "(refused: the closure registered at {}",
        at(refused)
    )));
    assert!(message.contains("try_defer"), "{message}");
    assert!(!message.contains(&at(noise)), "{message}");
    // The panic itself points at the refused line.
    let (sender, receiver) = std::sync::mpsc::channel();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = sender.send(info.location().map(|l| (l.file().to_owned(), l.line())));
    }));
    let panic_line = line!() + 1;
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scope.defer(|| ())));
    std::panic::set_hook(previous);
    assert_eq!(
        receiver.recv().unwrap(),
        Some((file!().to_owned(), panic_line))
    );
    let error = scope.try_defer(|| ()).unwrap_err();
    assert_eq!(error.site().line(), line!() - 1);
    let (busiest, count) = error.busiest_site().unwrap();
    assert_eq!((busiest.line(), count), (pile, 2));

    // Of lines with as many pending, the one registered first.
    let tied = Scope::with_limit(4);
    let first = line!() + 2;
    for _ in 0..2 {
        tied.defer(|| ());
    }
    for _ in 0..2 {
        tied.defer(|| ());
    }
    let (busiest, count) = tied.try_defer(|| ()).unwrap_err().busiest_site().unwrap();
    assert_eq!((busiest.line(), count), (first, 2));
    // Interleaved, a line's closures are counted together.
    let mixed = Scope::with_limit(5);
    let spread = line!() + 3;
    for i in 0..5 {
        if i % 2 == 0 {
            mixed.defer(|| ());
        } else {
            mixed.defer(|| ());
        }
    }
    let (busiest, count) = mixed.try_defer(|| ()).unwrap_err().busiest_site().unwrap();
    assert_eq!((busiest.line(), count), (spread, 3));
}

#[test]
fn stats_display_lists_the_busiest_sites_first() {
    let scope = Scope::with_stats();
    let pile = line!() + 2;
    for _ in 0..4 {
        scope.defer(|| ());
    }
    scope.defer(|| ());
    let printed = scope.stats().unwrap().to_string();
    let mut lines = printed.lines();
    assert_eq!(
        lines.next(),
        Some(
            "5 registered, 5 pending, high water 5, 0 ran, 0 dismissed, 0 taken, 0 refused, 0 \
             panics, 0 errors"
        )
    );
    assert!(lines.next().unwrap().contains("at high water"));
    let top = lines.next().unwrap();
    assert!(
        top.split_whitespace()
            .eq(["4", "4", "4", &format!("{}:{pile}:15", file!())]),
        "{top}"
    );
    let _: &Location<'static> = scope.stats().unwrap().sites()[1].location;
    // Five sites at most, then how many more.
    let sites = |count: usize| {
        let scope = Scope::with_stats();
        // Seven lines, one closure each.
        let lines: [fn(&Scope<'_>); 7] = [
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
            |s| s.defer(|| ()),
        ];
        for register in &lines[..count] {
            register(&scope);
        }
        scope.stats().unwrap().to_string()
    };
    assert!(!sites(5).contains("more sites"), "{}", sites(5));
    assert!(
        sites(6).ends_with("  ... and 1 more site\n"),
        "{}",
        sites(6)
    );
    assert!(
        sites(7).ends_with("  ... and 2 more sites\n"),
        "{}",
        sites(7)
    );
}

#[test]
fn the_first_time_the_high_water_mark_is_reached_is_the_one_described() {
    let mut scope = Scope::with_stats();
    let first = line!() + 2;
    for _ in 0..2 {
        scope.defer(|| ());
    }
    scope.run_now();
    let second = line!() + 2;
    for _ in 0..2 {
        scope.defer(|| ());
    }
    scope.run_now();
    assert_eq!(
        rows(&scope.stats().unwrap()),
        [(first, 2, 0, 2), (second, 2, 0, 0)]
    );
    // Pending now, as many as the mark: still the first.
    let third = line!() + 2;
    for _ in 0..2 {
        scope.defer(|| ());
    }
    assert_eq!(
        rows(&scope.stats().unwrap()),
        [(first, 2, 0, 2), (second, 2, 0, 0), (third, 2, 2, 0)]
    );
}
