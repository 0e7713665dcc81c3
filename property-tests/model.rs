//! Model-based property test: random programs of scope operations, checked against a plain
//! `Vec` model for the exact order of runs and drops and for the panic payload that surfaces.
#![cfg(feature = "std")] // several panicking cleanups in one scope need `catch_unwind`

#[path = "../tests/common/mod.rs"]
mod common;

use std::panic;

use common::{AlignedToken, Event, Events, LargeToken, Token, catch_expected, quiet_panics};
use proptest::prelude::*;
use scoped_defer::{Scope, for_each_scoped};

/// How a deferred closure is stored.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Small,
    Large,
    Aligned,
    ZeroSized,
}

#[derive(Clone, Debug)]
enum Op {
    Defer {
        kind: Kind,
        panics: bool,
    },
    /// `hold` a token of this kind; its cleanup runs it.
    Hold {
        kind: Kind,
        panics: bool,
    },
    RunNow,
    Dismiss,
    TakeAndDrop,
    Nested(Vec<Op>),
    Loop {
        items: u8,
        per_item: u8,
        panic_at: Option<(u8, u8)>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(Kind::Small),
        Just(Kind::Large),
        Just(Kind::Aligned),
        Just(Kind::ZeroSized)
    ];
    let leaf = prop_oneof![
        6 => (kind.clone(), prop::bool::weighted(0.2)).prop_map(|(kind, panics)| Op::Defer { kind, panics }),
        3 => (kind, prop::bool::weighted(0.2)).prop_map(|(kind, panics)| Op::Hold { kind, panics }),
        1 => Just(Op::RunNow),
        1 => Just(Op::Dismiss),
        1 => Just(Op::TakeAndDrop),
        1 => (0u8..4, 0u8..12, prop::option::weighted(0.3, (0u8..4, 0u8..12)))
            .prop_map(|(items, per_item, panic_at)| Op::Loop { items, per_item, panic_at }),
    ];
    leaf.prop_recursive(3, 64, 12, |inner| {
        prop::collection::vec(inner, 0..12).prop_map(Op::Nested)
    })
}

/// Zero-sized closures cannot carry an id; they log this marker instead.
const ZERO_SIZED: u32 = u32::MAX;

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Events>> = const { std::cell::RefCell::new(None) };
}

fn log_zero_sized() {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .expect("events installed")
            .push(Event::Ran(ZERO_SIZED))
    });
}

/// One pending closure of the model.
#[derive(Clone, Copy)]
struct Pending {
    id: u32,
    zero_sized: bool,
    panics: bool,
}

/// The model: what should be pending, what the log should say, which payload should surface.
struct Model {
    next_id: u32,
    expected: Vec<Event>,
}

impl Model {
    /// Runs `pending` last first, logging as the real scope should, and returns the payload
    /// (an id) of the first panic.
    fn run(&mut self, pending: &mut Vec<Pending>) -> Option<u32> {
        let mut first_panic = None;
        while let Some(p) = pending.pop() {
            if p.zero_sized {
                self.expected.push(Event::Ran(ZERO_SIZED));
            } else {
                self.expected.push(Event::Ran(p.id));
                self.expected.push(Event::Dropped(p.id));
            }
            if p.panics && first_panic.is_none() {
                first_panic = Some(p.id);
            }
        }
        first_panic
    }

    fn dismiss(&mut self, pending: &mut Vec<Pending>) {
        while let Some(p) = pending.pop() {
            if !p.zero_sized {
                self.expected.push(Event::Dropped(p.id));
            }
        }
    }
}

/// The payload of a panic raised by the test's own closures.
fn payload_id(result: std::thread::Result<()>) -> Option<u32> {
    result
        .err()
        .map(|payload| *payload.downcast::<u32>().expect("panic payloads are ids"))
}

fn catch(f: impl FnOnce()) -> Option<u32> {
    payload_id(catch_expected(f))
}

fn defer_kind<'a, const N: usize>(
    scope: &mut Scope<'a, N>,
    token: Token,
    kind: Kind,
    panics: bool,
) {
    let finish = move |token: &Token| {
        token.ran();
        if panics {
            panic::panic_any(token.id);
        }
    };
    match kind {
        Kind::Small => scope.defer(move || finish(&token)),
        Kind::Large => {
            let large = LargeToken {
                token,
                padding: [1; 7],
            };
            scope.defer(move || finish(&large.token));
        }
        Kind::Aligned => {
            let aligned = AlignedToken(token);
            scope.defer(move || finish(&aligned.0));
        }
        Kind::ZeroSized => unreachable!("zero-sized closures carry no token"),
    }
}

/// Holds `token` in `scope` as a value of the given kind, and checks that the reference lent
/// out reaches it.
fn hold_kind<const N: usize>(scope: &Scope<'_, N>, token: Token, kind: Kind, panics: bool) {
    let id = token.id;
    let finish = move |token: &Token| {
        token.ran();
        if panics {
            panic::panic_any(token.id);
        }
    };
    let held_id = match kind {
        Kind::Small | Kind::ZeroSized => scope.hold(token, move |token| finish(&token)).id,
        Kind::Large => {
            let large = LargeToken {
                token,
                padding: [1; 7],
            };
            let held = scope.hold(large, move |large| finish(&large.token));
            held.padding[6] += 1;
            held.token.id
        }
        Kind::Aligned => {
            scope
                .hold(AlignedToken(token), move |aligned| finish(&aligned.0))
                .0
                .id
        }
    };
    assert_eq!(held_id, id);
}

/// Executes `ops` on `scope` and on the model side by side, checking every surfaced panic.
fn execute<const N: usize>(
    ops: &[Op],
    scope: &mut Scope<'_, N>,
    pending: &mut Vec<Pending>,
    model: &mut Model,
    events: &Events,
) {
    for op in ops {
        match op {
            Op::Defer {
                kind: Kind::ZeroSized,
                panics,
            } => {
                let id = model.next_id;
                model.next_id += 1;
                pending.push(Pending {
                    id,
                    zero_sized: true,
                    panics: *panics,
                });
                if *panics {
                    scope.defer(move || {
                        log_zero_sized();
                        panic::panic_any(id);
                    });
                } else {
                    scope.defer(log_zero_sized);
                }
            }
            Op::Defer { kind, panics } | Op::Hold { kind, panics } => {
                let id = model.next_id;
                model.next_id += 1;
                pending.push(Pending {
                    id,
                    zero_sized: false,
                    panics: *panics,
                });
                let token = events.token(id);
                if matches!(op, Op::Hold { .. }) {
                    hold_kind(scope, token, *kind, *panics);
                } else {
                    defer_kind(scope, token, *kind, *panics);
                }
            }
            Op::RunNow => {
                let expected = model.run(pending);
                assert_eq!(catch(|| scope.run_now()), expected, "run_now payload");
                assert!(scope.is_empty());
            }
            Op::Dismiss => {
                model.dismiss(pending);
                assert_eq!(catch(|| scope.dismiss()), None);
            }
            Op::TakeAndDrop => {
                let taken = scope.take();
                assert!(scope.is_empty());
                let expected = model.run(pending);
                assert_eq!(catch(move || drop(taken)), expected, "taken scope payload");
            }
            Op::Nested(inner_ops) => {
                let mut inner: Scope<'_, 2> = Scope::default();
                let mut inner_pending = Vec::new();
                execute(inner_ops, &mut inner, &mut inner_pending, model, events);
                assert_eq!(inner.len(), inner_pending.len());
                let expected = model.run(&mut inner_pending);
                assert_eq!(catch(move || drop(inner)), expected, "nested scope payload");
            }
            Op::Loop {
                items,
                per_item,
                panic_at,
            } => {
                let mut expected_panic = None;
                let first_id = model.next_id;
                for item in 0..*items {
                    let mut iteration = Vec::new();
                    for k in 0..*per_item {
                        let id = first_id + u32::from(item) * u32::from(*per_item) + u32::from(k);
                        let panics = *panic_at == Some((item, k));
                        iteration.push(Pending {
                            id,
                            zero_sized: false,
                            panics,
                        });
                    }
                    if let Some(id) = model.run(&mut iteration) {
                        expected_panic = Some(id);
                        break;
                    }
                }
                // Ids are reserved for every item, pulled or not.
                model.next_id = first_id + u32::from(*items) * u32::from(*per_item);
                let actual = catch(|| {
                    for_each_scoped(0..*items, |s, item| {
                        for k in 0..*per_item {
                            let id =
                                first_id + u32::from(item) * u32::from(*per_item) + u32::from(k);
                            defer_kind(
                                s,
                                events.token(id),
                                Kind::Small,
                                *panic_at == Some((item, k)),
                            );
                        }
                    });
                });
                assert_eq!(actual, expected_panic, "loop payload");
            }
        }
        assert_eq!(scope.len(), pending.len(), "pending count after {op:?}");
        assert_eq!(events.all(), model.expected, "event log after {op:?}");
    }
}

fn check(ops: &[Op]) {
    let events = Events::new();
    CURRENT.with(|c| *c.borrow_mut() = Some(events.clone()));
    let mut model = Model {
        next_id: 0,
        expected: Vec::new(),
    };
    let mut pending = Vec::new();
    let mut scope: Scope<'_, 4> = Scope::default();
    execute(ops, &mut scope, &mut pending, &mut model, &events);
    let expected = model.run(&mut pending);
    assert_eq!(catch(move || drop(scope)), expected, "final drop payload");
    assert_eq!(events.all(), model.expected, "final event log");
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Operations per program; Miri interprets every instruction, so it gets shorter ones.
const PROGRAM_LENGTH: usize = if cfg!(miri) { 12 } else { 40 };

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 6 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scope_matches_the_vec_model(ops in prop::collection::vec(op(), 0..PROGRAM_LENGTH)) {
        quiet_panics();
        check(&ops);
    }
}
