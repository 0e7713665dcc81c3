//! One test suite for both scope types: `SendScope` forwards every method to `Scope`, so each
//! test here runs on both, and a method that exists on one cannot go untested on the other.

mod common;

use std::sync::{Arc, Mutex};

#[cfg(feature = "std")]
use common::{catch_expected, quiet_panics};
use scoped_defer::{BoxError, CleanupErrors, LimitExceeded, Scope, SendScope, Stats};

/// Every method the two scope types share, with the `Send` bounds of the stricter one.
trait Scoped<'env>: Sized {
    const NAME: &'static str;
    fn new() -> Self;
    fn with_limit(limit: usize) -> Self;
    fn with_stats() -> Self;
    fn set_limit(&mut self, limit: usize);
    fn track_stats(&mut self);
    fn set_error_handler(&mut self, handler: impl FnMut(BoxError) + Send + 'env);
    fn defer(&self, f: impl FnOnce() + Send + 'env);
    fn try_defer<F: FnOnce() + Send + 'env>(&self, f: F) -> Result<(), LimitExceeded<F>>;
    fn defer_fallible(&self, f: impl FnOnce() -> Result<(), &'static str> + Send + 'env);
    #[allow(clippy::mut_from_ref)]
    fn hold<T: Send + 'env>(&self, value: T, cleanup: impl FnOnce(T) + Send + 'env) -> &mut T;
    #[allow(clippy::mut_from_ref)]
    fn hold_fallible<T: Send + 'env>(
        &self,
        value: T,
        cleanup: impl FnOnce(T) -> Result<(), &'static str> + Send + 'env,
    ) -> &mut T;
    fn defer_on_error(&self, f: impl FnOnce() + Send + 'env);
    fn defer_on_success(&self, f: impl FnOnce() + Send + 'env);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool;
    fn capacity(&self) -> usize;
    fn spilled(&self) -> bool;
    fn limit(&self) -> Option<usize>;
    fn stats(&self) -> Option<Stats>;
    fn run_now(&mut self);
    fn try_run_now(&mut self) -> Result<(), CleanupErrors>;
    fn finish(self) -> Result<(), CleanupErrors>;
    fn dismiss(&mut self);
    fn take(&mut self) -> Self;
    fn into_local(self) -> Scope<'env>;
}

/// Implements [`Scoped`] by calling the type's own methods of the same names.
macro_rules! scoped {
    ($type:ident, |$s:ident| $into_local:expr) => {
        impl<'env> Scoped<'env> for $type<'env> {
            const NAME: &'static str = stringify!($type);
            fn new() -> Self {
                $type::new()
            }
            fn with_limit(limit: usize) -> Self {
                $type::with_limit(limit)
            }
            fn with_stats() -> Self {
                $type::with_stats()
            }
            fn set_limit(&mut self, limit: usize) {
                $type::set_limit(self, limit)
            }
            fn track_stats(&mut self) {
                $type::track_stats(self)
            }
            fn set_error_handler(&mut self, handler: impl FnMut(BoxError) + Send + 'env) {
                $type::set_error_handler(self, handler)
            }
            fn defer(&self, f: impl FnOnce() + Send + 'env) {
                $type::defer(self, f)
            }
            fn try_defer<F: FnOnce() + Send + 'env>(&self, f: F) -> Result<(), LimitExceeded<F>> {
                $type::try_defer(self, f)
            }
            fn defer_fallible(&self, f: impl FnOnce() -> Result<(), &'static str> + Send + 'env) {
                $type::defer_fallible(self, f)
            }
            fn hold<T: Send + 'env>(
                &self,
                value: T,
                cleanup: impl FnOnce(T) + Send + 'env,
            ) -> &mut T {
                $type::hold(self, value, cleanup)
            }
            fn hold_fallible<T: Send + 'env>(
                &self,
                value: T,
                cleanup: impl FnOnce(T) -> Result<(), &'static str> + Send + 'env,
            ) -> &mut T {
                $type::hold_fallible(self, value, cleanup)
            }
            fn defer_on_error(&self, f: impl FnOnce() + Send + 'env) {
                $type::defer_on_error(self, f)
            }
            fn defer_on_success(&self, f: impl FnOnce() + Send + 'env) {
                $type::defer_on_success(self, f)
            }
            fn len(&self) -> usize {
                $type::len(self)
            }
            fn is_empty(&self) -> bool {
                $type::is_empty(self)
            }
            fn capacity(&self) -> usize {
                $type::capacity(self)
            }
            fn spilled(&self) -> bool {
                $type::spilled(self)
            }
            fn limit(&self) -> Option<usize> {
                $type::limit(self)
            }
            fn stats(&self) -> Option<Stats> {
                $type::stats(self)
            }
            fn run_now(&mut self) {
                $type::run_now(self)
            }
            fn try_run_now(&mut self) -> Result<(), CleanupErrors> {
                $type::try_run_now(self)
            }
            fn finish(self) -> Result<(), CleanupErrors> {
                $type::finish(self)
            }
            fn dismiss(&mut self) {
                $type::dismiss(self)
            }
            fn take(&mut self) -> Self {
                $type::take(self)
            }
            fn into_local(self) -> Scope<'env> {
                let $s = self;
                $into_local
            }
        }
    };
}

scoped!(Scope, |s| s);
scoped!(SendScope, |s| s.into_local());

/// A `Send` log of what ran.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    /// A closure that logs `entry`.
    fn entry(&self, entry: &'static str) -> impl FnOnce() + Send + 'static {
        let log = self.clone();
        move || log.push(entry)
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Defines a test that runs `$body` for `Scope` and for `SendScope`.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn scope() {
                super::$body::<scoped_defer::Scope<'static>>();
            }
            #[test]
            fn send_scope() {
                super::$body::<scoped_defer::SendScope<'static>>();
            }
        }
    };
}

both!(registration_runs_in_reverse_order, runs_in_reverse_order);
fn runs_in_reverse_order<S: Scoped<'static>>() {
    let log = Log::default();
    let mut scope = S::new();
    assert!(scope.is_empty());
    scope.defer(log.entry("defer"));
    let held = scope.hold(String::from("hold"), {
        let log = log.clone();
        move |value| log.push(value)
    });
    held.push('!');
    scope.defer_on_success(log.entry("on success"));
    scope.defer_on_error(log.entry("on error"));
    assert_eq!(scope.len(), 4, "{}", S::NAME);
    assert!(!scope.is_empty());
    scope.run_now();
    assert!(scope.is_empty());
    assert_eq!(log.take(), ["on success", "hold!", "defer"], "{}", S::NAME);
}

both!(storage_grows_and_reports_it, grows_and_reports);
fn grows_and_reports<S: Scoped<'static>>() {
    let log = Log::default();
    let scope = S::new();
    assert_eq!(scope.capacity(), 8);
    for _ in 0..8 {
        scope.defer(log.entry("x"));
    }
    assert!(!scope.spilled(), "{}", S::NAME);
    scope.defer(log.entry("x"));
    assert!(scope.spilled(), "{}", S::NAME);
    assert!(scope.capacity() > 8);
    drop(scope);
    assert_eq!(log.take().len(), 9);
}

both!(limits_refuse_the_closure_past_them, limits);
fn limits<S: Scoped<'static>>() {
    let log = Log::default();
    let scope = S::with_limit(1);
    assert_eq!(scope.limit(), Some(1), "{}", S::NAME);
    assert!(scope.stats().is_none(), "a limit alone tracks no stats");
    scope.try_defer(log.entry("first")).unwrap();
    let refused = scope.try_defer(log.entry("refused")).unwrap_err();
    assert_eq!(refused.limit(), 1);
    refused.into_closure()();
    let mut scope = scope;
    scope.set_limit(2);
    assert_eq!(scope.limit(), Some(2));
    scope.try_defer(log.entry("second")).unwrap();
    drop(scope);
    assert_eq!(log.take(), ["refused", "second", "first"]);
    assert_eq!(S::new().limit(), None);
}

both!(stats_count_every_closure, stats);
fn stats<S: Scoped<'static>>() {
    let mut scope = S::with_stats();
    scope.defer(|| ());
    scope.dismiss();
    scope.defer(|| ());
    drop(scope.take());
    scope.defer(|| ());
    scope.run_now();
    let stats = scope.stats().unwrap();
    assert_eq!(
        (stats.registered, stats.ran, stats.dismissed, stats.taken),
        (3, 1, 1, 1),
        "{}",
        S::NAME
    );

    let mut late = S::new();
    assert!(late.stats().is_none());
    late.track_stats();
    late.defer(|| ());
    assert_eq!(late.stats().unwrap().pending, 1);
}

both!(errors_are_returned_or_handed_over, errors);
fn errors<S: Scoped<'static>>() {
    let mut scope = S::new();
    scope.defer_fallible(|| Err("first"));
    *scope.hold_fallible(1, |n| if n == 2 { Err("held") } else { Ok(()) }) += 1;
    let errors = scope.try_run_now().unwrap_err();
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages, ["held", "first"], "{}", S::NAME);
    assert!(scope.try_run_now().is_ok());

    let scope = S::new();
    scope.defer_fallible(|| Err("at finish"));
    assert_eq!(scope.finish().unwrap_err().len(), 1);

    let handled = Log::default();
    let mut scope = S::new();
    let log = handled.clone();
    scope.set_error_handler(move |error| log.push(error.to_string()));
    scope.defer_fallible(|| Err("handled"));
    drop(scope);
    assert_eq!(handled.take(), ["handled"], "{}", S::NAME);
}

#[cfg(feature = "std")] // without `std`, a dropped scope cannot tell it is unwinding
both!(outcome_aware_closures_follow_the_outcome, outcomes);
#[cfg(feature = "std")]
fn outcomes<S: Scoped<'static>>() {
    quiet_panics();
    let log = Log::default();
    let result = catch_expected(|| {
        let scope = S::new();
        scope.defer_on_error(log.entry("rolled back"));
        scope.defer_on_success(log.entry("committed"));
        panic!("the body fails");
    });
    assert!(result.is_err());
    assert_eq!(log.take(), ["rolled back"], "{}", S::NAME);
}

both!(dismiss_drops_and_take_moves, dismiss_and_take);
fn dismiss_and_take<S: Scoped<'static>>() {
    let log = Log::default();
    let mut scope = S::new();
    scope.defer(log.entry("dismissed"));
    scope.dismiss();
    assert!(scope.is_empty());
    scope.defer(log.entry("taken"));
    let taken = scope.take();
    assert_eq!((scope.len(), taken.len()), (0, 1), "{}", S::NAME);
    drop(scope);
    assert!(log.take().is_empty());
    drop(taken);
    assert_eq!(log.take(), ["taken"]);
}

both!(into_local_keeps_the_closures, into_local);
fn into_local<S: Scoped<'static>>() {
    let log = Log::default();
    let scope = S::with_stats();
    scope.defer(log.entry("kept"));
    let local = scope.into_local();
    assert_eq!(local.len(), 1, "{}", S::NAME);
    assert!(local.stats().is_some(), "stats come along");
    drop(local);
    assert_eq!(log.take(), ["kept"]);
}
