//! `defer!`, `defer_on_success!` and `defer_on_unwind!` guards of the enclosing block.
#![cfg(feature = "std")] // the outcome-aware guards need `std::thread::panicking`
mod common;

use std::cell::{Cell, RefCell};

use common::{panic_message, quiet_panics};
use scoped_defer::{defer, defer_on_success, defer_on_unwind};

#[test]
fn defer_runs_at_block_end_in_reverse_order() {
    let log = RefCell::new(Vec::new());
    {
        defer! { log.borrow_mut().push(1); }
        defer! { log.borrow_mut().push(2); }
        log.borrow_mut().push(0);
        assert_eq!(*log.borrow(), [0]);
    }
    assert_eq!(*log.borrow(), [0, 2, 1]);
}

#[test]
fn defer_runs_on_early_return_and_on_unwind() {
    quiet_panics();
    fn early(flag: &Cell<u32>) -> u32 {
        defer! { flag.set(flag.get() + 1); }
        if flag.get() == 0 {
            return 7;
        }
        unreachable!()
    }
    let flag = Cell::new(0);
    assert_eq!(early(&flag), 7);
    assert_eq!(flag.get(), 1);

    let ran = Cell::new(false);
    let message = panic_message(|| {
        defer! { ran.set(true); }
        panic!("body");
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert!(ran.get());
}

#[test]
fn outcome_guards_follow_how_the_block_is_left() {
    quiet_panics();
    let log = RefCell::new(Vec::new());
    {
        defer_on_success! { log.borrow_mut().push("success"); }
        defer_on_unwind! { log.borrow_mut().push("unwind"); }
    }
    assert_eq!(*log.borrow(), ["success"]);

    log.borrow_mut().clear();
    let message = panic_message(|| {
        defer_on_success! { log.borrow_mut().push("success"); }
        defer_on_unwind! { log.borrow_mut().push("unwind"); }
        panic!("body");
    });
    assert_eq!(message.as_deref(), Some("body"));
    assert_eq!(*log.borrow(), ["unwind"]);
}

/// Creates outcome guards inside a destructor and leaves their block normally.
struct GuardsInDrop<'a> {
    log: &'a RefCell<Vec<&'static str>>,
}

impl Drop for GuardsInDrop<'_> {
    fn drop(&mut self) {
        assert!(
            std::thread::panicking(),
            "this destructor runs during an unwind"
        );
        let log = self.log;
        defer_on_success! { log.borrow_mut().push("success"); }
        defer_on_unwind! { log.borrow_mut().push("unwind"); }
    }
}

#[test]
fn an_outer_unwind_does_not_fool_outcome_guards_made_during_it() {
    quiet_panics();
    let log = RefCell::new(Vec::new());
    let message = panic_message(|| {
        let _cleanup = GuardsInDrop { log: &log };
        panic!("outer");
    });
    assert_eq!(message.as_deref(), Some("outer"));
    assert_eq!(
        *log.borrow(),
        ["success"],
        "the guards' own block was left normally"
    );
}

#[test]
fn a_panic_caught_inside_the_block_does_not_count_as_unwinding_it() {
    quiet_panics();
    let log = RefCell::new(Vec::new());
    {
        defer_on_success! { log.borrow_mut().push("success"); }
        defer_on_unwind! { log.borrow_mut().push("unwind"); }
        let caught = std::panic::catch_unwind(|| panic!("inner"));
        assert!(caught.is_err());
    }
    assert_eq!(*log.borrow(), ["success"]);
}

#[test]
fn the_scope_form_pushes_a_move_closure() {
    let log = RefCell::new(Vec::new());
    let log = &log;
    scoped_defer::scope(|s| {
        for i in 0..3 {
            defer!(s => log.borrow_mut().push(i));
        }
        defer!(s => {
            let last = "block body";
            log.borrow_mut().push(last.len());
        });
        assert_eq!(s.len(), 4);
    });
    assert_eq!(*log.borrow(), [10, 2, 1, 0]);
}
