//! Go-style `defer` for Rust, scoped properly: zero-cost block guards, a dynamic LIFO stack of
//! cleanups that stores small closures inline, and loops whose every iteration gets its own
//! stack.
//!
//! ```
//! use std::cell::RefCell;
//! use scoped_defer::{defer, for_each_scoped, scope};
//!
//! let log = RefCell::new(Vec::new());
//! let log = &log;
//!
//! // A block guard: runs at the end of the block, on every exit.
//! {
//!     defer! { log.borrow_mut().push("block guard".to_string()); }
//! }
//!
//! // A Go-style function scope: closures registered at run time run last-in, first-out.
//! scope(|s| {
//!     for i in 1..=3 {
//!         s.defer(move || log.borrow_mut().push(format!("scope {i}")));
//!     }
//! });
//!
//! // Go's defer-in-a-loop, done right: each iteration's cleanups run before the next one.
//! for_each_scoped(["a.txt", "b.txt"], |s, name| {
//!     log.borrow_mut().push(format!("open {name}"));
//!     s.defer(move || log.borrow_mut().push(format!("close {name}")));
//! });
//!
//! assert_eq!(*log.borrow(), [
//!     "block guard",
//!     "scope 3", "scope 2", "scope 1",
//!     "open a.txt", "close a.txt", "open b.txt", "close b.txt",
//! ]);
//! ```
//!
//! # What is here
//!
//! - [`defer!`], [`defer_on_success!`], [`defer_on_unwind!`]: guards for the enclosing block,
//!   compiled to the same code as calling the closure by hand at every exit.
//! - [`Scope`]: a stack of deferred closures registered at run time, like Go's per-function
//!   defer chain or Python's `contextlib.ExitStack`. It can be run early
//!   ([`run_now`](Scope::run_now)), dismissed ([`dismiss`](Scope::dismiss)) or handed to the
//!   caller ([`take`](Scope::take)). Closures of up to three machine words are stored inline:
//!   no heap allocation per closure, and none at all for up to `N` (default 8) pending ones.
//! - [`Scope::hold`] / [`Scope::hold_fallible`]: Go's `f := open(); defer f.Close(); use(f)`.
//!   The scope takes the value, lends it back as `&mut T`, and gives it to the cleanup when it
//!   ends. Registration takes `&self`, so held values stay usable while more are registered.
//! - [`scope`], [`try_scope`], [`for_each_scoped`], [`try_for_each_scoped`] (and their `_in`
//!   forms, with a scope of your own) and [`IteratorExt`]: a function scope, and loops whose
//!   iterations each get their own scope, reusing its storage.
//! - Cleanups that can fail ([`Scope::defer_fallible`]): their errors are returned by
//!   [`Scope::finish`] and [`try_scope`] ([`CleanupErrors`], [`ScopeError`]) or handed to an
//!   [`set_error_handler`](Scope::set_error_handler) handler, never lost. Cleanups that depend on the outcome
//!   ([`Scope::defer_on_error`], Zig's `errdefer`, and [`Scope::defer_on_success`]).
//! - [`Scope::with_limit`] and [`Stats`]: stop or measure closures that pile up.
//! - [`SendScope`]: a scope for `Send` closures that is itself `Send`.
//!
//! # Guarantees
//!
//! - Closures of a scope run in strict reverse order of registration.
//! - Each closure runs at most once; its captures are dropped exactly once, whether it ran,
//!   panicked or was dismissed.
//! - A panicking closure does not stop the others; the first panic then resumes with its
//!   original payload. When a scope is dropped during an unwind, its closures' panics are
//!   caught so that the original unwind continues instead of aborting (`std` feature).
//! - The error of a failed cleanup is returned, handed to a handler, or raised: never dropped.
//!
//! # Crate features
//!
//! - `std` (default): catching of panics raised by cleanups during an unwind, and the
//!   outcome-aware [`defer_on_success!`] and [`defer_on_unwind!`]. Without it the crate is
//!   `#![no_std]` and needs only `alloc`; a cleanup that panics while the thread is already
//!   unwinding then aborts the process, as any panicking destructor does.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 (edition 2024). Raising it is a minor version bump.
//!
//! # Unsafe code
//!
//! This crate uses `unsafe` to store closures of different types in one inline array (and in
//! heap segments that never move), and to lend out held values from `&self`. All of it lives
//! in one private module, every block states why it is sound, and the test suite runs under
//! Miri with both of its borrow models.

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arena;
mod bounds;
#[cfg(doctest)]
mod compile_fail;
mod deferred;
mod ending;
mod error;
mod guard;
mod loops;
mod scope;
mod send_scope;
mod stats;

pub use bounds::{CleanupError, CleanupOutput};
pub use ending::try_scope;
pub use error::{BoxError, CleanupErrors, LimitExceeded, ScopeError};
#[doc(hidden)]
pub use guard::__private;
pub use loops::{
    IteratorExt, for_each_scoped, for_each_scoped_in, try_for_each_scoped, try_for_each_scoped_in,
};
pub use scope::{Scope, scope};
pub use send_scope::SendScope;
pub use stats::Stats;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
