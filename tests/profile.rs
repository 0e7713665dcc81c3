//! The process-wide profile. One test, alone in its binary: the profile is global, and other
//! tests running at the same time would add their scopes to it.
#![cfg(feature = "std")]

use std::sync::Barrier;

use scoped_defer::{Scope, profile};

#[test]
fn the_report_adds_up_the_scopes_of_every_thread_and_empties_as_they_end() {
    assert!(profile::report().sites().is_empty());
    let before = Scope::with_stats();
    before.defer(|| ());
    profile::enable();
    let untracked = Scope::new();
    untracked.defer(|| ());

    const THREADS: usize = 4;
    let (registered, checked) = (Barrier::new(THREADS + 1), Barrier::new(THREADS + 1));
    let (pile, once) = (line!() + 7, line!() + 9);
    let report = std::thread::scope(|threads| {
        for t in 0..THREADS {
            let (registered, checked) = (&registered, &checked);
            threads.spawn(move || {
                let scope = Scope::with_limit(1_000);
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
        .map(|site| {
            assert_eq!(site.location.file(), file!());
            (site.location.line(), site.pending)
        })
        .collect();
    assert_eq!(rows, [(pile, 10 + 20 + 30 + 40), (once, THREADS)]);
    assert_eq!(report.total(), 104);
    assert_eq!(
        report.folded(),
        format!(
            "scoped_defer;{file}:{pile}:27 100\nscoped_defer;{file}:{once}:23 4\n",
            file = file!()
        )
    );
    let printed = report.to_string();
    assert!(printed.starts_with("104 closures pending in profiled scopes, at 2 sites"));
    assert!(
        profile::report().sites().is_empty(),
        "every scope has ended"
    );

    // Dismissed and taken closures leave the profile too, and so does a panicking drain.
    let mut scope = Scope::with_stats();
    scope.defer(|| ());
    let taken = scope.take();
    assert!(
        profile::report().sites().is_empty(),
        "taken: no longer this scope's"
    );
    drop(taken);
    scope.defer(|| ());
    scope.dismiss();
    assert!(profile::report().sites().is_empty(), "dismissed");
    scope.defer(|| panic!("cleanup failed"));
    assert_eq!(profile::report().total(), 1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scope.run_now()));
    assert!(panicked.is_err());
    assert!(profile::report().sites().is_empty());

    profile::disable();
    let after = Scope::with_stats();
    after.defer(|| ());
    assert!(
        profile::report().sites().is_empty(),
        "not counted once disabled"
    );
    drop((before, untracked, after));
}
