//! Go-style `defer` for Rust, scoped properly: zero-cost block guards, a dynamic LIFO stack of
//! cleanups that stores small closures inline, and loops whose every iteration gets its own
//! stack. Cleanup errors are returned, not lost.
//!
//! Copy files, each closed (and synced) at the end of its own iteration, with every error, of
//! a copy or of a `sync_all`, returned through `?`:
//!
//! ```
//! # #[cfg(feature = "std")] { // `?` into `io::Error` needs the `std` feature
//! use std::fs::File;
//! use std::io;
//! use std::path::PathBuf;
//! use scoped_defer::try_for_each_scoped;
//!
//! fn copy_all(pairs: &[(PathBuf, PathBuf)]) -> io::Result<u64> {
//!     let mut total = 0;
//!     try_for_each_scoped(pairs, |s, (from, to)| {
//!         let src = s.hold(File::open(from)?, drop); // f := open(); defer f.Close()
//!         let dst = s.hold_fallible(File::create(to)?, |f| f.sync_all()); // error kept
//!         total += io::copy(src, dst)?;
//!         Ok::<_, io::Error>(())
//!     })?;
//!     Ok(total)
//! }
//! # if cfg!(miri) { return; } // Miri runs without a file system
//! # let dir = tempfile::tempdir().unwrap();
//! # let (from, to) = (dir.path().join("in"), dir.path().join("out"));
//! # std::fs::write(&from, "abc").unwrap();
//! # assert_eq!(copy_all(&[(from, to)]).unwrap(), 3);
//! # }
//! ```
//!
//! Undo the steps of a setup that fails half-way, and only those (Zig's `errdefer`):
//!
//! ```
//! # #[cfg(feature = "std")] { // `?` into `io::Error` needs the `std` feature
//! use std::{fs, io, path::Path};
//! use scoped_defer::try_scope;
//!
//! fn set_up(root: &Path) -> io::Result<()> {
//!     try_scope(|s| {
//!         fs::create_dir(root.join("cache"))?;
//!         s.defer_on_error(|| drop(fs::remove_dir(root.join("cache"))));
//!         fs::write(root.join("missing/config"), "")?; // fails: the directory is removed
//!         Ok::<_, io::Error>(())
//!     })?;
//!     Ok(())
//! }
//! # if cfg!(miri) { return; }
//! # let dir = tempfile::tempdir().unwrap();
//! # assert!(set_up(dir.path()).is_err());
//! # assert!(!dir.path().join("cache").exists());
//! # }
//! ```
//!
//! # What is here
//!
//! - [`defer!`], [`defer_on_success!`], [`defer_on_unwind!`]: guards for the enclosing block,
//!   compiled to the same code as calling the closure by hand at every exit.
//! - [`Scope`]: a stack of deferred closures registered at run time, like Go's per-function
//!   defer chain or Python's `contextlib.ExitStack`. Closures of up to three machine words
//!   (two for fallible ones, which keep their line) are stored inline: no heap allocation per
//!   closure, none at all for up to `N` (default 8) pending ones. [`hold`](Scope::hold) takes
//!   a value, lends it back and gives it to its cleanup at the end. A scope can be run early
//!   ([`run_now`](Scope::run_now)), dismissed ([`dismiss`](Scope::dismiss)) or handed to the
//!   caller ([`take`](Scope::take)).
//! - [`scope`], [`try_scope`], [`for_each_scoped`], [`try_for_each_scoped`] (and `_in` forms
//!   with a scope of your own; [`IteratorExt`] for method syntax): a function scope, and loops
//!   whose iterations each get their own scope, reusing its storage.
//! - Cleanups that can fail ([`defer_fallible`](Scope::defer_fallible)): their errors are
//!   returned by [`finish`](Scope::finish) and [`try_scope`] ([`CleanupErrors`],
//!   [`ScopeError`], both convertible into `io::Error`), or handed to an
//!   [error handler](Scope::set_error_handler). Cleanups that depend on the outcome
//!   ([`defer_on_error`](Scope::defer_on_error), [`defer_on_success`](Scope::defer_on_success)).
//! - [`Scope::with_limit`] and [`Stats`]: stop or measure closures that pile up, and find the
//!   line that piles them up ([`Stats::sites`]; [`profile`] across every scope and thread).
//! - [`SendScope`]: a scope for `Send` closures that is itself `Send`.
//! - [`async_scope`], [`try_async_scope`] and [`AsyncScope`]: cleanups that are awaited, last
//!   registered first, on every exit ([`defer_async`](AsyncScope::defer_async),
//!   [`hold_async`](AsyncScope::hold_async)), on any executor; what a cancelled scope does
//!   with them is in one table under [`AsyncScope`].
//! - [`try_for_each_concurrent_scoped`], [`for_each_concurrent_scoped`]: Go's `errgroup` with
//!   `SetLimit` for async I/O, each item with its own [`AsyncScope`]; the first failure stops
//!   new items and cancels the others, whose cleanups are still awaited before it returns.
//! - [`report`]: where what cannot be returned goes (an error lost to a panic, the async
//!   cleanups of a cancelled scope): a hook, set like `std::panic::set_hook` (`std` feature).
//! - With the `rayon` feature, `par_for_each_scoped`, `par_try_for_each_scoped` and
//!   `ParallelIteratorExt`: Go's `errgroup`, with a scope per item on the worker that runs it.
//!
//! The [`guide`] has the rest: a table from Go, Python, Java, Zig and C++ idioms to this
//! crate, how it compares with other crates, the FAQ, the performance figures, and each
//! guarantee with the test that checks it.
//!
//! # Guarantees
//!
//! - Closures of a scope run in strict reverse order of registration, each at most once; their
//!   captures are dropped exactly once, whether they ran, panicked or were dismissed.
//! - A panicking closure does not stop the others; the first panic then resumes with its
//!   original payload. A scope dropped during an unwind catches its closures' panics, so the
//!   unwind continues instead of aborting (`std` feature).
//! - An outcome-aware cleanup sees the outcome as it stands when it runs: the body's result,
//!   or a panic or error of a cleanup that ran before it.
//! - The error of a failed cleanup is returned, handed to a handler, or raised: never dropped.
//!   What cannot be returned (an error lost to a panic, the async cleanups of a cancelled
//!   scope) is [reported](report) to a hook the application can set; reporting never panics or
//!   aborts, whatever standard error is and whatever the user code it calls does (`std`).
//!
//! # Crate features
//!
//! - `std` (default): catching of panics raised by cleanups during an unwind, the
//!   outcome-aware [`defer_on_success!`] and [`defer_on_unwind!`], conversions into
//!   `io::Error`, and [`AsyncScope`]. Without it the crate is `#![no_std]` and needs only
//!   `alloc`; a cleanup that panics while the thread is already unwinding then aborts, as any
//!   panicking destructor does.
//! - `rayon`: parallel scoped loops on rayon's pools. Adds the `rayon` dependency.
//! - `tokio`: a cancelled [`async_scope`] spawns its pending async cleanups on the current
//!   tokio runtime instead of dropping them. Adds the `tokio` dependency (its `rt` feature).
//! - `tracing`: the default [report hook](report) emits each report of what the crate cannot
//!   return as a `tracing` `error!` event with structured fields (`kind`, `site`, `error`)
//!   when a subscriber is set, instead of writing it to standard error. Adds the `tracing`
//!   dependency (without its default features).
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 (edition 2024). Raising it is a minor version bump.
//!
//! # Unsafe code
//!
//! The inline storage erases closure types by hand, and `hold` lends out `&mut T` from
//! `&self`. All of it lives in one private module, every block states why it is sound, and the
//! test suite runs under Miri with both of its borrow models.

#![no_std]
// `unsafe` lives in `arena` alone, which says why each block is sound.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[allow(unsafe_code)]
mod arena;
#[cfg(feature = "std")]
mod async_scope;
mod bounds;
#[cfg(doctest)]
mod compile_fail;
#[cfg(feature = "std")]
mod concurrent;
mod deferred;
mod ending;
mod entry;
mod error;
mod guard;
mod loops;
#[cfg(feature = "rayon")]
mod parallel;
#[cfg(feature = "std")]
pub mod profile;
#[cfg(feature = "std")]
pub mod report;
mod scope;
mod send_scope;
mod sites;
mod stats;
mod tracking;

#[cfg(feature = "std")]
pub use async_scope::{AsyncScope, async_scope, try_async_scope};
pub use bounds::{CleanupError, CleanupOutput};
#[cfg(feature = "std")]
pub use concurrent::{for_each_concurrent_scoped, try_for_each_concurrent_scoped};
pub use ending::try_scope;
pub use entry::{Entry, Held};
pub use error::{BoxError, CleanupErrors, LimitExceeded, ScopeError};
#[doc(hidden)]
pub use guard::__private;
pub use loops::{
    IteratorExt, for_each_scoped, for_each_scoped_in, try_for_each_scoped, try_for_each_scoped_in,
};
#[cfg(feature = "rayon")]
pub use parallel::{
    ConcurrentFailures, ParallelIteratorExt, par_for_each_scoped, par_for_each_scoped_in,
    par_try_for_each_scoped, par_try_for_each_scoped_in,
};
pub use scope::{Scope, scope};
pub use send_scope::SendScope;
pub use sites::SiteStats;
pub use stats::Stats;

/// The README, as a guide: how Go, Python, Java, Zig and C++ idioms map to this crate, how it
/// compares, the FAQ, performance, and the guarantees with the tests that check them.
// The README's code blocks are whole programs, so rustdoc's doctests compile each one as a
// reader would paste it; `tests/readme.rs` checks that none hides a line, and compiles the one
// that needs a feature and the table cells. They use `std` and files: without `std`, and under
// Miri (no file system), the README is left out. The chart is inline: docs.rs cannot serve the
// README's relative image, which the README hides from rustdoc.
#[cfg_attr(all(feature = "std", not(miri)), doc = include_str!("../README.md"))]
#[cfg_attr(
    feature = "std",
    doc = concat!(
        "\n## The chart of `leak_check`\n\n",
        "Pending cleanups and open files per item: the leaky handler climbs to 200, the fixed \
         one stays flat (`cargo run --release --example leak_check --features chart`).\n\n",
        include_str!("../docs/leak_check.svg"),
    )
)]
#[cfg_attr(not(feature = "std"), doc = "\n(The guide needs the `std` feature.)")]
pub mod guide {}
