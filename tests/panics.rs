//! A panicking closure never stops the others; the first panic surfaces with its payload; a
//! scope dropped during an unwind never turns a cleanup's panic into an abort.
// Without `std`, a second panic while unwinding aborts (there is no `catch_unwind`), which is
// what most of these tests provoke.
#![cfg(feature = "std")]

mod common;

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use common::{Events, panic_message, quiet_panics, scaled};
use scoped_defer::Scope;

#[test]
fn remaining_closures_run_and_the_first_panic_surfaces() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        let scope: Scope<'_> = Scope::new();
        for id in 0..6 {
            let token = events.token(id);
            scope.defer(move || {
                token.ran();
                if id % 2 == 1 {
                    panic!("closure {id}");
                }
            });
        }
    });
    assert_eq!(
        message.as_deref(),
        Some("closure 5"),
        "the first panic to happen wins"
    );
    assert_eq!(events.ran(), [5, 4, 3, 2, 1, 0]);
    events.assert_each_dropped_once(0..6);
}

#[test]
fn run_now_panics_after_running_everything_and_leaves_the_scope_usable() {
    quiet_panics();
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    for id in 0..4 {
        let token = events.token(id);
        scope.defer(move || {
            token.ran();
            assert!(id != 2, "closure {id}");
        });
    }
    let message = panic_message(|| scope.run_now());
    assert_eq!(message.as_deref(), Some("closure 2"));
    assert_eq!(events.ran(), [3, 2, 1, 0]);
    assert!(scope.is_empty());

    let token = events.token(7);
    scope.defer(move || token.ran());
    drop(scope);
    assert_eq!(events.ran(), [3, 2, 1, 0, 7]);
    events.assert_each_dropped_once([0, 1, 2, 3, 7]);
}

#[test]
fn a_scope_dropped_by_a_panicking_body_runs_everything_and_keeps_the_body_panic() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        scoped_defer::scope(|s| {
            for id in 0..5 {
                let token = events.token(id);
                s.defer(move || {
                    token.ran();
                    panic!("cleanup {id}");
                });
            }
            panic!("body");
        });
    });
    assert_eq!(
        message.as_deref(),
        Some("body"),
        "cleanup panics never replace the body's"
    );
    assert_eq!(events.ran(), [4, 3, 2, 1, 0]);
    events.assert_each_dropped_once(0..5);
}

#[test]
fn a_hundred_thousand_panicking_closures_neither_overflow_nor_abort() {
    quiet_panics();
    let count = scaled(100_000);
    let ran = Cell::new(0usize);
    let message = panic_message(|| {
        let scope: Scope<'_> = Scope::new();
        for i in 0..count {
            let ran = &ran;
            scope.defer(move || {
                ran.set(ran.get() + 1);
                panic!("closure {i}");
            });
        }
    });
    assert_eq!(ran.get(), count);
    assert_eq!(message, Some(format!("closure {}", count - 1)));
}

#[test]
fn non_string_payloads_surface_unchanged() {
    quiet_panics();
    #[derive(Debug, PartialEq)]
    struct Code(u32);
    let payload = panic::catch_unwind(AssertUnwindSafe(|| {
        let scope: Scope<'_> = Scope::new();
        scope.defer(|| panic::panic_any(Code(2)));
        scope.defer(|| panic::panic_any(Code(1)));
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<Code>(), Some(&Code(1)));
}

/// A capture whose own `Drop` panics.
struct PanicsOnDrop<'a> {
    dropped: &'a Cell<u32>,
}

impl Drop for PanicsOnDrop<'_> {
    fn drop(&mut self) {
        self.dropped.set(self.dropped.get() + 1);
        panic!("drop of a capture");
    }
}

#[test]
fn a_capture_that_panics_in_drop_neither_stops_nor_repeats_anything() {
    quiet_panics();
    let dropped = Cell::new(0);
    let events = Events::new();
    let message = panic_message(|| {
        let scope: Scope<'_> = Scope::new();
        let token = events.token(0);
        scope.defer(move || token.ran());
        let capture = PanicsOnDrop { dropped: &dropped };
        scope.defer(move || {
            let _keep = &capture;
        });
        let token = events.token(2);
        scope.defer(move || token.ran());
    });
    assert_eq!(message.as_deref(), Some("drop of a capture"));
    assert_eq!(dropped.get(), 1);
    assert_eq!(events.ran(), [2, 0]);
    events.assert_each_dropped_once([0, 2]);
}

#[test]
fn dismiss_keeps_dropping_after_a_capture_panics_in_drop() {
    quiet_panics();
    let dropped = Cell::new(0);
    let mut scope: Scope<'_> = Scope::new();
    for _ in 0..3 {
        let capture = PanicsOnDrop { dropped: &dropped };
        scope.defer(move || drop(capture));
    }
    let message = panic_message(|| scope.dismiss());
    assert_eq!(message.as_deref(), Some("drop of a capture"));
    assert_eq!(dropped.get(), 3);
    assert!(scope.is_empty());
}

/// Drops a scope from inside a destructor that runs during an unwind.
struct CleansUpOnDrop<'a> {
    events: &'a Events,
}

impl Drop for CleansUpOnDrop<'_> {
    fn drop(&mut self) {
        assert!(std::thread::panicking());
        let scope: Scope<'_> = Scope::new();
        for id in 10..13 {
            let token = self.events.token(id);
            scope.defer(move || {
                token.ran();
                panic!("nested cleanup {id}");
            });
        }
    }
}

#[test]
fn cleanups_that_panic_inside_a_destructor_during_an_unwind_do_not_abort() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        let _outer = CleansUpOnDrop { events: &events };
        panic!("outer");
    });
    assert_eq!(message.as_deref(), Some("outer"));
    assert_eq!(events.ran(), [12, 11, 10]);
    events.assert_each_dropped_once(10..13);
}

#[test]
fn payloads_whose_drop_panics_are_contained() {
    quiet_panics();
    struct Payload;
    impl Drop for Payload {
        fn drop(&mut self) {
            panic!("payload drop");
        }
    }
    let ran = Cell::new(0);
    let message = panic_message(|| {
        let scope: Scope<'_> = Scope::new();
        scope.defer(|| ran.set(ran.get() + 1));
        scope.defer(|| panic::panic_any(Payload));
        scope.defer(|| ran.set(ran.get() + 1));
        panic!("body");
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert_eq!(ran.get(), 2);
}

#[test]
fn cleanups_may_register_into_another_scope() {
    let events = Events::new();
    let mut outer: Scope<'_> = Scope::new();
    {
        let outer_ref = &mut outer;
        let inner: Scope<'_> = Scope::new();
        let events_ref = &events;
        inner.defer(move || {
            events_ref.push(common::Event::Ran(1));
            let token = events_ref.token(2);
            outer_ref.defer(move || token.ran());
        });
    }
    assert_eq!(events.ran(), [1]);
    drop(outer);
    assert_eq!(events.ran(), [1, 2]);
}

fn recurse(depth: u32, events: &Events) {
    let scope: Scope<'_> = Scope::new();
    let token = events.token(depth);
    scope.defer(move || token.ran());
    if depth > 0 {
        recurse(depth - 1, events);
    } else {
        panic!("bottom");
    }
}

#[test]
fn deep_recursion_with_a_scope_per_frame_unwinds_every_frame() {
    quiet_panics();
    let events = Events::new();
    let depth = scaled(2_000) as u32;
    let message = panic_message(|| recurse(depth, &events));
    assert_eq!(message.as_deref(), Some("bottom"));
    assert_eq!(events.ran(), (0..=depth).collect::<Vec<_>>());
}

/// As in Go, where a deferred call after a panicking one runs while the panic is in flight
/// (and could `recover` it): the closures after a panicking one see `panicking()`, whether
/// the scope stayed inline or grew into the heap, and whether it is dropped or run.
#[test]
fn closures_after_a_panicking_one_run_while_it_is_in_flight() {
    quiet_panics();
    for pending in [2, 8, 9, 40] {
        for run_now in [false, true] {
            let seen = std::cell::RefCell::new(Vec::new());
            let message = panic_message(|| {
                let mut scope: Scope<'_> = Scope::new();
                for id in 0..pending {
                    let seen = &seen;
                    scope.defer(move || {
                        seen.borrow_mut().push(std::thread::panicking());
                        assert!(
                            id != pending - 1,
                            "the last registered, so the first to run"
                        );
                    });
                }
                if run_now {
                    scope.run_now();
                }
            });
            assert_eq!(
                message.as_deref(),
                Some("the last registered, so the first to run")
            );
            let mut expected = vec![true; pending];
            expected[0] = false;
            assert_eq!(
                *seen.borrow(),
                expected,
                "{pending} closures, run_now: {run_now}"
            );
        }
    }
}
