//! Every closure runs at most once and its captures are dropped exactly once: when it runs,
//! when it panics, or when it is dismissed.
mod common;

use common::{AlignedToken, Events, LargeToken, Token, panic_message, quiet_panics};
use scoped_defer::Scope;

fn defer_small(scope: &mut Scope<'_, 2>, token: Token) {
    scope.defer(move || token.ran());
}

fn defer_large(scope: &mut Scope<'_, 2>, token: Token) {
    let large = LargeToken {
        token,
        padding: [0; 7],
    };
    scope.defer(move || large.token.ran());
}

fn defer_aligned(scope: &mut Scope<'_, 2>, token: Token) {
    let aligned = AlignedToken(token);
    scope.defer(move || aligned.0.ran());
}

type Register = fn(&mut Scope<'_, 2>, Token);
const KINDS: [(&str, Register); 3] = [
    ("inline", defer_small),
    ("boxed", defer_large),
    ("over-aligned", defer_aligned),
];

#[test]
fn a_run_closure_drops_its_captures_once_right_after_running() {
    for (kind, register) in KINDS {
        let events = Events::new();
        let mut scope = Scope::default();
        for id in 0..4 {
            register(&mut scope, events.token(id));
        }
        drop(scope);
        use common::Event::{Dropped, Ran};
        assert_eq!(
            events.all(),
            [
                Ran(3),
                Dropped(3),
                Ran(2),
                Dropped(2),
                Ran(1),
                Dropped(1),
                Ran(0),
                Dropped(0)
            ],
            "{kind}"
        );
    }
}

#[test]
fn dismiss_drops_captures_once_without_running() {
    for (kind, register) in KINDS {
        let events = Events::new();
        let mut scope = Scope::default();
        for id in 0..4 {
            register(&mut scope, events.token(id));
        }
        scope.dismiss();
        assert!(scope.is_empty(), "{kind}");
        assert_eq!(events.dropped(), [3, 2, 1, 0], "{kind}: dropped last first");
        drop(scope);
        assert!(
            events.ran().is_empty(),
            "{kind}: dismissed closures never run"
        );
        events.assert_each_dropped_once(0..4);
    }
}

#[test]
fn a_panicking_closure_drops_its_captures_once() {
    quiet_panics();
    for (kind, register) in KINDS {
        let events = Events::new();
        let message = panic_message(|| {
            let mut scope = Scope::default();
            register(&mut scope, events.token(0));
            let token = events.token(1);
            scope.defer(move || {
                token.ran();
                panic!("boom");
            });
            register(&mut scope, events.token(2));
        });
        assert_eq!(message.as_deref(), Some("boom"), "{kind}");
        assert_eq!(events.ran(), [2, 1, 0], "{kind}");
        events.assert_each_dropped_once(0..3);
    }
}

#[test]
fn taken_closures_are_dropped_once_by_whichever_scope_ends_them() {
    let events = Events::new();
    let mut scope: Scope<'_, 2> = Scope::default();
    for id in 0..5 {
        defer_small(&mut scope, events.token(id));
    }
    let mut taken = scope.take();
    drop(scope);
    assert!(events.all().is_empty(), "the emptied scope owns nothing");
    taken.dismiss();
    drop(taken);
    events.assert_each_dropped_once(0..5);
    assert!(events.ran().is_empty());
}
