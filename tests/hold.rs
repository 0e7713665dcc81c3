//! `hold` and `hold_fallible`: values lent out by the scope, given back to their cleanup in
//! LIFO order with every other closure, dropped exactly once on every path, and never moved
//! while lent out, however much the storage grows.

mod common;

use std::cell::{Cell, RefCell};

use common::{Event, Events, LargeToken, Token, catch_expected, quiet_panics, scaled};
use scoped_defer::{Scope, ScopeError, SendScope, scope, try_for_each_scoped, try_scope};

#[test]
fn holds_and_closures_run_in_one_lifo_order() {
    let log = RefCell::new(Vec::new());
    {
        let s: Scope<'_> = Scope::new();
        s.defer(|| log.borrow_mut().push("closure 1".to_string()));
        let a = s.hold(String::from("held a"), |a| log.borrow_mut().push(a));
        s.defer(|| log.borrow_mut().push("closure 2".to_string()));
        let b = s.hold(String::from("held b"), |b| log.borrow_mut().push(b));
        a.push_str(" (used)");
        b.push_str(" (used)");
    }
    assert_eq!(
        *log.borrow(),
        ["held b (used)", "closure 2", "held a (used)", "closure 1"]
    );
}

#[test]
fn several_held_values_are_usable_at_once_while_more_are_registered() {
    let sums = RefCell::new(Vec::new());
    scope(|s| {
        let x = s.hold(0u64, |x| sums.borrow_mut().push(x));
        let y = s.hold(0u64, |y| sums.borrow_mut().push(y));
        for i in 1..=10 {
            *x += i;
            s.defer(|| ()); // registering while `x` and `y` are lent out
            *y += *x;
        }
    });
    assert_eq!(*sums.borrow(), [220, 55]);
}

#[test]
fn a_held_reference_survives_growth_into_the_heap() {
    // Hold a value in inline slot 0, grow the storage through several heap segments, then
    // write through the first reference. Under Miri (both borrow models) this checks that no
    // registration invalidates a reference lent out earlier.
    let seen = Cell::new(0);
    let total = Cell::new(0);
    {
        let s: Scope<'_, 2> = Scope::default();
        let first = s.hold(1u64, |v| seen.set(v));
        let large = s.hold([0u64; 8], |v| {
            total.set(total.get() + v.iter().sum::<u64>())
        });
        for _ in 0..scaled(1000) {
            s.defer(|| total.set(total.get() + 1));
        }
        assert!(s.spilled());
        let in_segment = s.hold(5u64, |v| total.set(total.get() + v));
        for _ in 0..scaled(1000) {
            s.defer(|| ());
        }
        *first += 41;
        large[7] = 100;
        *in_segment += 1;
    }
    assert_eq!(seen.get(), 42);
    assert_eq!(total.get(), scaled(1000) as u64 + 100 + 6);
}

#[test]
fn a_held_value_is_dropped_once_by_its_cleanup_when_the_scope_runs() {
    let events = Events::new();
    {
        let s: Scope<'_> = Scope::new();
        s.hold(events.token(1), |token| token.ran());
        s.hold(
            LargeToken {
                token: events.token(2),
                padding: [0; 7],
            },
            |large| large.token.ran(),
        );
    }
    assert_eq!(
        events.all(),
        [
            Event::Ran(2),
            Event::Dropped(2),
            Event::Ran(1),
            Event::Dropped(1)
        ]
    );
}

#[test]
fn dismiss_drops_held_values_without_their_cleanup() {
    let events = Events::new();
    let mut s: Scope<'_> = Scope::new();
    s.hold(events.token(1), |token| token.ran());
    s.hold(
        LargeToken {
            token: events.token(2),
            padding: [0; 7],
        },
        |large| large.token.ran(),
    );
    s.dismiss();
    assert_eq!(events.all(), [Event::Dropped(2), Event::Dropped(1)]);
    drop(s);
    assert_eq!(events.all().len(), 2, "nothing runs or drops twice");
}

#[test]
fn take_hands_held_values_over_and_the_taker_runs_them() {
    let events = Events::new();
    let mut s: Scope<'_, 1> = Scope::default();
    *s.hold(7u32, |_| ()) += 1;
    s.hold(events.token(1), |token| token.ran());
    s.hold(events.token(2), |token| token.ran());
    let taken = s.take();
    drop(s);
    assert!(events.all().is_empty(), "the emptied scope runs nothing");
    drop(taken);
    assert_eq!(
        events.all(),
        [
            Event::Ran(2),
            Event::Dropped(2),
            Event::Ran(1),
            Event::Dropped(1)
        ]
    );
}

#[test]
fn a_panicking_cleanup_drops_its_value_and_the_others_still_run() {
    quiet_panics();
    let events = Events::new();
    let result = catch_expected(|| {
        let s: Scope<'_> = Scope::new();
        s.hold(events.token(1), |token| token.ran());
        s.hold(events.token(2), |_token| panic!("cleanup 2 failed"));
        s.hold(events.token(3), |token| token.ran());
    });
    assert!(result.is_err());
    assert_eq!(events.ran(), [3, 1]);
    events.assert_each_dropped_once([1, 2, 3]);
}

#[test]
fn a_panicking_body_runs_the_cleanups_of_its_held_values() {
    quiet_panics();
    let events = Events::new();
    let result = catch_expected(|| {
        scope(|s| {
            let token = s.hold(events.token(1), |token| token.ran());
            token.ran();
            s.hold(events.token(2), |token| token.ran());
            panic!("the body failed");
        })
    });
    assert!(result.is_err());
    assert_eq!(events.ran(), [1, 2, 1]);
    events.assert_each_dropped_once([1, 2]);
}

#[test]
fn a_refused_hold_drops_its_value_unrun() {
    quiet_panics();
    let events = Events::new();
    let s: Scope<'_> = Scope::with_limit(1);
    s.hold(events.token(1), |token| token.ran());
    let refused = catch_expected(|| s.hold(events.token(2), |token| token.ran()));
    assert!(refused.is_err());
    assert_eq!(events.all(), [Event::Dropped(2)]);
    drop(s);
    assert_eq!(
        events.all(),
        [Event::Dropped(2), Event::Ran(1), Event::Dropped(1)]
    );
}

#[test]
fn hold_fallible_errors_reach_finish_try_scope_and_the_handler() {
    let s: Scope<'_> = Scope::new();
    let count = s.hold_fallible(0, |count| {
        if count == 2 {
            Ok(())
        } else {
            Err(format!("counted {count}"))
        }
    });
    *count += 1;
    assert_eq!(s.finish().unwrap_err().first().to_string(), "counted 1");

    let result = try_scope(|s| {
        let flushed = s.hold_fallible(Vec::<u8>::new(), |buffer| {
            if buffer.is_empty() {
                Err("nothing to flush")
            } else {
                Ok(())
            }
        });
        flushed.clear();
        Ok::<_, std::io::Error>(())
    });
    match result {
        Err(ScopeError::Cleanup(errors)) => {
            assert_eq!(errors.first().to_string(), "nothing to flush");
        }
        other => panic!("unexpected: {other:?}"),
    }

    let handled = RefCell::new(Vec::new());
    {
        let mut s: Scope<'_> = Scope::new();
        s.set_error_handler(|error| handled.borrow_mut().push(error.to_string()));
        s.hold_fallible(3, |n| if n > 2 { Err("too many") } else { Ok(()) });
    }
    assert_eq!(*handled.borrow(), ["too many"]);
}

#[test]
fn hold_fallible_with_a_failing_body_keeps_the_cleanup_error_as_suppressed() {
    let result: Result<(), _> = try_scope(|s| {
        s.hold_fallible((), |()| Err("close failed"));
        Err("write failed")
    });
    let error = result.unwrap_err();
    assert_eq!(error.body_error(), Some(&"write failed"));
    assert_eq!(
        error.cleanup_errors().unwrap().first().to_string(),
        "close failed"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real files; the same holds are checked on memory values above"
)]
fn go_style_file_copy_in_a_loop_keeps_one_pair_of_files_open() {
    use std::fs::File;
    use std::io::{self, Write};

    let dir = tempfile::tempdir().unwrap();
    let open_files = Cell::new(0);
    let peak = Cell::new(0);
    let pairs: Vec<_> = (0..20)
        .map(|i| {
            let from = dir.path().join(format!("{i}.in"));
            File::create(&from)
                .unwrap()
                .write_all(&[b'x'; 100])
                .unwrap();
            (from, dir.path().join(format!("{i}.out")))
        })
        .collect();
    let opened = |file: File| {
        open_files.set(open_files.get() + 1);
        peak.set(peak.get().max(open_files.get()));
        file
    };
    let close = |file: File| {
        open_files.set(open_files.get() - 1);
        drop(file);
    };
    let mut total = 0;
    try_for_each_scoped(&pairs, |s, (from, to)| {
        let src = s.hold(opened(File::open(from)?), close);
        let dst = s.hold_fallible(opened(File::create(to)?), |f: File| {
            let synced = f.sync_all();
            close(f);
            synced
        });
        total += io::copy(src, dst)?;
        Ok::<_, io::Error>(())
    })
    .unwrap();
    assert_eq!(total, 20 * 100);
    assert_eq!((open_files.get(), peak.get()), (0, 2));
}

#[test]
fn send_scope_holds_send_values_across_threads() {
    let scope: SendScope<'static> = SendScope::new();
    let (sender, receiver) = std::sync::mpsc::channel();
    let buffer = scope.hold(Vec::new(), move |buffer: Vec<u32>| {
        sender.send(buffer).unwrap();
    });
    buffer.extend([1, 2, 3]);
    std::thread::spawn(move || drop(scope)).join().unwrap();
    assert_eq!(receiver.recv().unwrap(), [1, 2, 3]);
}

#[test]
fn held_values_in_a_loop_are_run_per_iteration_and_storage_is_reused() {
    let events = Events::new();
    let ids = Cell::new(0);
    scoped_defer::for_each_scoped(0..3, |s, _| {
        for _ in 0..20 {
            let id = ids.get();
            ids.set(id + 1);
            s.hold(events.token(id), |token: Token| token.ran());
        }
    });
    let ran = events.ran();
    let expected: Vec<u32> = (0..3)
        .flat_map(|item| (item * 20..item * 20 + 20).rev())
        .collect();
    assert_eq!(ran, expected);
    events.assert_each_dropped_once(0..60);
}
