//! Loop helpers: every iteration gets its own scope, whose closures run before the next item
//! is pulled.
mod common;

use std::cell::{Cell, RefCell};

use common::{Event, Events, panic_message, quiet_panics, scaled};
use scoped_defer::{IteratorExt, for_each_scoped, try_for_each_scoped};

/// An iterator that logs when each item is pulled.
fn logged_items<'a>(events: &'a Events, count: u32) -> impl Iterator<Item = u32> + 'a {
    (0..count).inspect(move |&i| events.push(Event::Ran(100 + i)))
}

#[test]
fn each_iteration_runs_its_closures_before_the_next_item_is_pulled() {
    let events = Events::new();
    for_each_scoped(logged_items(&events, 3), |s, i| {
        for k in 0..2 {
            let token = events.token(i * 10 + k);
            s.defer(move || token.ran());
        }
    });
    assert_eq!(events.ran(), [100, 1, 0, 101, 11, 10, 102, 21, 20]);
    events.assert_each_dropped_once([0, 1, 10, 11, 20, 21]);
}

#[test]
fn pending_closures_never_exceed_one_iterations_worth() {
    let open = Cell::new(0usize);
    let peak = Cell::new(0usize);
    let items = scaled(10_000);
    (0..items).for_each_scoped(|s, _| {
        for _ in 0..3 {
            open.set(open.get() + 1);
            peak.set(peak.get().max(open.get()));
            s.defer(|| open.set(open.get() - 1));
        }
        assert_eq!(s.len(), 3, "nothing left over from earlier iterations");
    });
    assert_eq!(open.get(), 0);
    assert_eq!(peak.get(), 3);
}

#[test]
fn try_stops_at_the_first_error_after_that_iterations_closures() {
    let events = Events::new();
    let result = try_for_each_scoped(logged_items(&events, 10), |s, i| {
        let token = events.token(i);
        s.defer(move || token.ran());
        if i == 2 {
            Err(format!("item {i}"))
        } else {
            Ok(())
        }
    });
    assert_eq!(result.unwrap_err().into_body_error().unwrap(), "item 2");
    assert_eq!(
        events.ran(),
        [100, 0, 101, 1, 102, 2],
        "no item pulled after the error"
    );
    events.assert_each_dropped_once(0..3);
}

#[test]
fn try_returns_ok_when_every_iteration_succeeds() {
    let closed = Cell::new(0);
    let result = (0..5).try_for_each_scoped(|s, _| {
        s.defer(|| closed.set(closed.get() + 1));
        Ok::<(), ()>(())
    });
    assert!(result.is_ok());
    assert_eq!(closed.get(), 5);
}

#[test]
fn a_panicking_body_runs_its_iterations_closures_while_unwinding() {
    quiet_panics();
    let events = Events::new();
    let message = panic_message(|| {
        for_each_scoped(logged_items(&events, 10), |s, i| {
            let token = events.token(i);
            s.defer(move || token.ran());
            assert!(i != 1, "body {i}");
        });
    });
    assert_eq!(message.as_deref(), Some("body 1"));
    assert_eq!(events.ran(), [100, 0, 101, 1]);
    events.assert_each_dropped_once(0..2);
}

#[test]
fn a_panicking_closure_stops_the_loop_after_its_iteration() {
    quiet_panics();
    let log = RefCell::new(Vec::new());
    let message = panic_message(|| {
        for_each_scoped(0..5, |s, i| {
            let log = &log;
            s.defer(move || log.borrow_mut().push((i, "first")));
            s.defer(move || {
                log.borrow_mut().push((i, "second"));
                assert!(i != 1, "cleanup {i}");
            });
        });
    });
    assert_eq!(message.as_deref(), Some("cleanup 1"));
    assert_eq!(
        *log.borrow(),
        [(0, "second"), (0, "first"), (1, "second"), (1, "first")]
    );
}

#[test]
fn storage_grown_by_one_iteration_is_reused_by_the_next() {
    let capacities = RefCell::new(Vec::new());
    for_each_scoped(0..4, |s, _| {
        capacities.borrow_mut().push(s.capacity());
        for _ in 0..20 {
            s.defer(|| ());
        }
    });
    let capacities = capacities.into_inner();
    assert_eq!(capacities[0], 8, "first iteration starts inline");
    assert!(capacities[1] >= 20);
    assert!(
        capacities[1..].windows(2).all(|w| w[0] == w[1]),
        "{capacities:?}"
    );
}

#[test]
fn a_panicking_body_runs_its_iterations_closures_even_when_the_scope_outlives_the_loop() {
    quiet_panics();
    let events = Events::new();
    let mut scope: scoped_defer::Scope<'_> = scoped_defer::Scope::new();
    let message = panic_message(|| {
        scoped_defer::for_each_scoped_in(&mut scope, 0..5, |s, i| {
            let token = events.token(i);
            s.defer(move || token.ran());
            assert!(i != 2, "body {i}");
        });
    });
    assert_eq!(message.as_deref(), Some("body 2"));
    assert!(
        scope.is_empty(),
        "the failed iteration's closures already ran"
    );
    assert_eq!(events.ran(), [0, 1, 2]);
    events.assert_each_dropped_once(0..3);
}
