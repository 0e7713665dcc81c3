//! Limits on pending closures, and the stats that make a pile-up visible.
mod common;

use common::{Events, panic_message, quiet_panics, scaled};
use scoped_defer::{Scope, Stats, for_each_scoped_in, try_for_each_scoped_in};

#[test]
fn defer_past_the_limit_panics_and_drops_the_closure_unrun() {
    quiet_panics();
    for limit in [0, 3, 8, 9, 20] {
        let events = Events::new();
        let scope: Scope<'_> = Scope::with_limit(limit);
        for id in 0..limit as u32 {
            let token = events.token(id);
            scope.defer(move || token.ran());
        }
        assert_eq!(scope.len(), limit);
        let token = events.token(999);
        let message = panic_message(|| scope.defer(move || token.ran())).expect("a panic");
        assert!(
            message.contains(&format!("limit of {limit} pending closures")),
            "{message}"
        );
        assert_eq!(
            events.dropped(),
            [999],
            "limit {limit}: the refused closure was dropped"
        );
        assert_eq!(scope.len(), limit);
        drop(scope);
        assert_eq!(events.ran(), (0..limit as u32).rev().collect::<Vec<_>>());
        events.assert_each_dropped_once((0..limit as u32).chain([999]));
    }
}

#[test]
fn try_defer_hands_the_closure_back_neither_run_nor_dropped() {
    let events = Events::new();
    let mut scope: Scope<'_> = Scope::with_limit(1);
    let first = events.token(0);
    scope.try_defer(move || first.ran()).unwrap();
    let second = events.token(1);
    let refused = scope.try_defer(move || second.ran()).unwrap_err();
    assert_eq!(refused.limit(), 1);
    assert!(
        refused
            .to_string()
            .starts_with("the scope already holds its limit of 1 pending closures, 1 of them"),
        "{refused}"
    );
    assert!(events.all().is_empty(), "neither run nor dropped");
    refused.into_closure()();
    assert_eq!(events.ran(), [1]);
    scope.run_now();
    let token = events.token(2);
    assert!(
        scope.try_defer(move || token.ran()).is_ok(),
        "room again after run_now"
    );
    drop(scope);
    assert_eq!(events.ran(), [1, 0, 2]);
}

#[test]
fn the_limit_applies_to_every_kind_of_closure() {
    quiet_panics();
    let scope: Scope<'_> = Scope::with_limit(2);
    scope.defer_fallible(|| Ok::<(), &str>(()));
    scope.defer_on_error(|| ());
    assert!(panic_message(|| scope.defer_on_success(|| ())).is_some());
    assert!(panic_message(|| scope.defer_fallible(|| Ok::<(), &str>(()))).is_some());
    assert_eq!(scope.len(), 2);
}

#[test]
fn stats_count_what_happened_to_every_closure() {
    quiet_panics();
    let mut scope: Scope<'_, 4> = Scope::default();
    scope.set_limit(10);
    scope.track_stats();
    assert_eq!(scope.stats().unwrap(), Stats::default());
    for _ in 0..6 {
        scope.defer(|| ());
    }
    scope.defer_fallible(|| Err::<(), _>("e1"));
    scope.defer(|| panic!("p1"));
    assert!(panic_message(|| drop(scope.try_run_now())).is_some());
    for _ in 0..2 {
        scope.defer(|| ());
    }
    scope.dismiss();
    scope.defer(|| ());
    let taken = scope.take();
    scope.defer(|| ());
    for _ in 0..9 {
        scope.defer(|| ());
    }
    assert!(scope.try_defer(|| ()).is_err());
    let stats = scope.stats().unwrap();
    assert_eq!(stats.ran, 8);
    assert_eq!(stats.dismissed, 2);
    assert_eq!(stats.taken, 1);
    assert_eq!(stats.refused, 1);
    assert_eq!(stats.pending, 10);
    assert_eq!(stats.registered, 8 + 2 + 1 + 10);
    assert_eq!(stats.high_water, 10);
    // Without `std` the panic propagates uncaught, so nothing counts it, and the error
    // collected before it is lost with it.
    let with_std = u64::from(cfg!(feature = "std"));
    assert_eq!((stats.panics, stats.errors), (with_std, with_std));
    assert!(stats.spilled);
    assert!(stats.heap_bytes >= 10 * 32, "{}", stats.heap_bytes);
    assert!(taken.stats().is_none(), "a taken scope tracks nothing");
}

#[test]
fn scopes_without_tracking_have_no_stats() {
    let scope: Scope<'_> = Scope::new();
    assert!(scope.stats().is_none());
    assert_eq!(scope.limit(), None);
}

#[test]
fn loop_stats_cover_every_iteration_and_reveal_no_pile_up() {
    let mut scope: Scope<'_> = Scope::with_stats();
    for_each_scoped_in(&mut scope, 0..100, |s, i| {
        for _ in 0..(i % 5) {
            s.defer(|| ());
        }
    });
    let stats = scope.stats().unwrap();
    assert_eq!(stats.ran, (0..100).map(|i| i % 5).sum::<u64>());
    assert_eq!(stats.high_water, 4, "the largest iteration, not the sum");
}

#[test]
fn a_limit_stops_a_pile_up_in_a_loop() {
    quiet_panics();
    // The Go bug: closures registered in a loop on a scope that outlives it.
    let message = panic_message(|| {
        let outer: Scope<'_> = Scope::with_limit(100);
        for _ in 0..scaled(10_000) {
            outer.defer(|| ());
        }
    });
    assert!(
        message.unwrap().contains("for_each_scoped"),
        "the message suggests the fix"
    );

    // The same loop with a scope per iteration never comes near the limit.
    let mut scope = Scope::with_stats();
    scope.set_limit(1);
    let result = try_for_each_scoped_in(&mut scope, 0..scaled(10_000), |s, _| {
        s.try_defer(|| ()).map_err(|refused| refused.limit())
    });
    assert!(result.is_ok());
    assert_eq!(scope.stats().unwrap().high_water, 1);
}

#[test]
fn extras_added_after_closures_keep_them_in_order() {
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    for id in 0..2 {
        let token = events.token(id);
        scope.defer(move || token.ran());
    }
    scope.set_error_handler(|_| ());
    let token = events.token(2);
    scope.defer(move || token.ran());
    assert_eq!(scope.len(), 3);
    drop(scope);
    assert_eq!(events.ran(), [2, 1, 0]);
    events.assert_each_dropped_once(0..3);
}

/// A refused closure whose drop panics: the panic seen is still the limit's, which names the
/// line that piles up, and the closure is dropped exactly once.
#[cfg(feature = "std")]
#[test]
fn a_refused_closure_that_panics_when_dropped_leaves_the_limits_message() {
    quiet_panics();
    struct PanicsOnDrop(std::rc::Rc<std::cell::Cell<u32>>);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
            panic!("refused drop");
        }
    }
    let drops = std::rc::Rc::new(std::cell::Cell::new(0));
    let scope: Scope<'_> = Scope::with_limit(1);
    scope.defer(|| ());
    let capture = PanicsOnDrop(drops.clone());
    let message = panic_message(|| scope.defer(move || drop(capture))).expect("a panic");
    assert!(
        message.starts_with("the scope already holds its limit of 1 pending closures"),
        "{message}"
    );
    assert_eq!(drops.get(), 1);
    assert_eq!(scope.len(), 1);
}

/// The limit's panic suggests `try_defer` only where it exists: for `defer`.
#[test]
fn the_limits_panic_names_what_exists_for_each_registration() {
    quiet_panics();
    let scope: Scope<'_> = Scope::with_limit(0);
    let deferred = panic_message(|| scope.defer(|| ())).expect("a panic");
    assert!(
        deferred.ends_with("or use try_defer, which hands the closure back"),
        "{deferred}"
    );
    for message in [
        panic_message(|| {
            scope.hold(1, drop);
        }),
        panic_message(|| scope.defer_on_error(|| ())),
        panic_message(|| scope.defer_fallible(|| Ok::<(), &str>(()))),
    ] {
        let message = message.expect("a panic");
        assert!(!message.contains("try_"), "{message}");
        assert!(
            message.ends_with("or compare len() with limit() before registering"),
            "{message}"
        );
    }
}

/// `AsyncScope` has the same limits and stats as `Scope`, and the same limit message.
#[cfg(feature = "std")]
mod async_scope {
    use super::*;
    use scoped_defer::AsyncScope;

    /// Polls a future that never waits.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the futures of this test never wait"),
        }
    }

    #[test]
    fn a_limit_refuses_the_cleanup_too_many_and_names_the_line() {
        quiet_panics();
        let scope = AsyncScope::with_limit(3);
        assert_eq!(scope.limit(), Some(3));
        let pile = line!() + 2;
        for _ in 0..2 {
            scope.defer_async(async {});
        }
        scope.defer(|| ());
        let token = std::sync::Arc::new(());
        let capture = std::sync::Arc::clone(&token);
        let message = panic_message(|| scope.defer(move || drop(capture))).expect("a panic");
        let expected = format!(
            "the scope already holds its limit of 3 pending closures, 2 of them registered at \
             {}:{pile}:",
            file!()
        );
        assert!(message.starts_with(&expected), "{message}");
        assert!(
            message.ends_with("or give the scope a larger limit"),
            "{message}"
        );
        assert_eq!(
            std::sync::Arc::strong_count(&token),
            1,
            "the refused cleanup was dropped unrun"
        );
        block_on(scope.finish()).unwrap();
    }

    /// The stats of an `AsyncScope` describe it while it lives (`finish` consumes it): what
    /// is pending, from which lines, and what was refused.
    #[test]
    fn stats_show_the_pending_cleanups_by_line() {
        quiet_panics();
        let mut scope = AsyncScope::new();
        assert!(scope.stats().is_none());
        scope.track_stats();
        scope.set_limit(20);
        let (sync_line, async_line) = (line!() + 2, line!() + 3);
        for _ in 0..10 {
            scope.defer(|| ());
            scope.defer_async_fallible(async { Err::<(), _>("failed") });
        }
        assert!(panic_message(|| scope.defer(|| ())).is_some());
        let stats = scope.stats().unwrap();
        assert_eq!(
            (
                stats.registered,
                stats.pending,
                stats.high_water,
                stats.refused
            ),
            (20, 20, 20, 1)
        );
        let lines: Vec<(u32, usize)> = stats
            .sites()
            .iter()
            .map(|site| (site.location.line(), site.pending))
            .collect();
        assert_eq!(lines, [(sync_line, 10), (async_line, 10)]);
        let errors = block_on(scope.finish()).unwrap_err();
        assert_eq!(errors.len(), 10);
    }
}
