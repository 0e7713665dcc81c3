//! Closures run in strict reverse order of registration, whatever their size and wherever
//! the stack lives.
mod common;

use common::{AlignedToken, Events, LargeToken};
use scoped_defer::Scope;

/// Registers `count` closures of varying storage classes (inline, boxed, over-aligned,
/// zero-sized) and returns the expected run order.
fn register_mixed<const N: usize>(scope: &mut Scope<'_, N>, events: &Events, count: u32) {
    for id in 0..count {
        let token = events.token(id);
        match id % 4 {
            0 => scope.defer(move || token.ran()),
            1 => {
                let large = LargeToken {
                    token,
                    padding: [u64::from(id); 7],
                };
                scope.defer(move || {
                    assert_eq!(large.padding, [u64::from(large.token.id); 7]);
                    large.token.ran();
                });
            }
            2 => {
                let aligned = AlignedToken(token);
                scope.defer(move || {
                    assert_eq!(std::ptr::from_ref(&aligned).addr() % 64, 0);
                    aligned.0.ran();
                });
            }
            _ => {
                // The closure itself is zero-sized; the token rides along by reference.
                let events = events.clone();
                drop(token);
                scope.defer(move || events.push(common::Event::Ran(id)));
            }
        }
    }
}

#[test]
fn drop_runs_last_registered_first() {
    let events = Events::new();
    {
        let mut scope: Scope<'_> = Scope::new();
        register_mixed(&mut scope, &events, 6);
        assert_eq!(scope.len(), 6);
        assert!(
            events.ran().is_empty(),
            "nothing runs before the scope ends"
        );
    }
    assert_eq!(events.ran(), [5, 4, 3, 2, 1, 0]);
}

#[test]
fn order_holds_across_the_inline_to_heap_boundary() {
    for count in [0, 1, 2, 3, 4, 5, 17, 100] {
        let events = Events::new();
        let mut scope: Scope<'_, 3> = Scope::default();
        register_mixed(&mut scope, &events, count);
        assert_eq!(scope.spilled(), count > 3, "count {count}");
        drop(scope);
        let expected: Vec<u32> = (0..count).rev().collect();
        assert_eq!(events.ran(), expected, "count {count}");
    }
}

#[test]
fn order_holds_with_zero_inline_slots() {
    let events = Events::new();
    let mut scope: Scope<'_, 0> = Scope::default();
    register_mixed(&mut scope, &events, 9);
    drop(scope);
    assert_eq!(events.ran(), [8, 7, 6, 5, 4, 3, 2, 1, 0]);
}

#[test]
fn run_now_runs_pending_closures_and_the_scope_stays_usable() {
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    register_mixed(&mut scope, &events, 5);
    let capacity = scope.capacity();
    scope.run_now();
    assert_eq!(events.ran(), [4, 3, 2, 1, 0]);
    assert!(scope.is_empty());
    assert_eq!(scope.capacity(), capacity, "run_now keeps the storage");

    let later = events.token(10);
    scope.defer(move || later.ran());
    scope.run_now();
    scope.run_now();
    assert_eq!(
        events.ran(),
        [4, 3, 2, 1, 0, 10],
        "a second run_now finds nothing to run"
    );
}

#[test]
fn take_moves_the_pending_closures_in_order() {
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    register_mixed(&mut scope, &events, 5);
    let taken = scope.take();
    assert!(scope.is_empty());
    assert_eq!(taken.len(), 5);
    let token = events.token(9);
    scope.defer(move || token.ran());
    drop(scope);
    assert_eq!(events.ran(), [9]);
    drop(taken);
    assert_eq!(events.ran(), [9, 4, 3, 2, 1, 0]);
}

#[test]
fn nested_scopes_unwind_inner_first() {
    let events = Events::new();
    scoped_defer::scope(|outer| {
        let token = events.token(1);
        outer.defer(move || token.ran());
        scoped_defer::scope(|inner| {
            let token = events.token(2);
            inner.defer(move || token.ran());
        });
        assert_eq!(events.ran(), [2]);
    });
    assert_eq!(events.ran(), [2, 1]);
}

#[test]
fn scope_returns_the_body_result_after_running_closures() {
    let events = Events::new();
    let value = scoped_defer::scope(|s| {
        let token = events.token(0);
        s.defer(move || token.ran());
        events.ran().len()
    });
    assert_eq!(value, 0, "the body ran before its closures");
    assert_eq!(events.ran(), [0]);
}

#[test]
fn a_million_closures_in_one_scope_run_in_reverse_order() {
    let count = common::scaled(1_000_000) as u32;
    let next = std::cell::Cell::new(count);
    let scope: Scope<'_> = Scope::new();
    for id in 0..count {
        let next = &next;
        scope.defer(move || {
            assert_eq!(next.get(), id + 1, "closure {id} ran out of order");
            next.set(id);
        });
    }
    assert_eq!(scope.len(), count as usize);
    drop(scope);
    assert_eq!(next.get(), 0, "every closure ran");
}
