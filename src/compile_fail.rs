//! Misuse that must not compile. Each block is a `compile_fail` doctest; the error code pins
//! the reason, so a block that starts failing for another reason fails the test.
//!
//! A deferred closure cannot borrow a local that dies before the scope ends:
//!
//! ```compile_fail,E0597
//! let mut scope = scoped_defer::Scope::new();
//! {
//!     let short_lived = String::from("gone");
//!     scope.defer(|| drop(short_lived.len()));
//! }
//! ```
//!
//! A value mutably borrowed by a pending closure cannot be used until the scope ends:
//!
//! ```compile_fail,E0503
//! let mut count = 0;
//! let mut scope = scoped_defer::Scope::new();
//! scope.defer(|| count += 1);
//! let seen = count; // still borrowed by the pending closure
//! drop(scope);
//! ```
//!
//! A scope is not `Send`, since it may hold closures that are not:
//!
//! ```compile_fail,E0277
//! let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let shared = std::rc::Rc::new(());
//! scope.defer(move || drop(shared));
//! std::thread::spawn(move || drop(scope));
//! ```
//!
//! So a future that holds one across an `.await` is not `Send` either (use
//! [`SendScope`](crate::SendScope) there):
//!
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(async {
//!     let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//!     scope.defer(|| ());
//!     std::future::ready(()).await;
//!     drop(scope);
//! });
//! ```
//!
//! The same future with a `SendScope` is `Send`, but a `SendScope` refuses a closure that is
//! not:
//!
//! ```compile_fail,E0277
//! let mut scope: scoped_defer::SendScope<'static> = scoped_defer::SendScope::new();
//! let shared = std::rc::Rc::new(());
//! scope.defer(move || drop(shared));
//! ```
//!
//! Nor can it take a handler that is not `Send`:
//!
//! ```compile_fail,E0277
//! let mut scope: scoped_defer::SendScope<'static> = scoped_defer::SendScope::new();
//! let shared = std::rc::Rc::new(());
//! scope.set_error_handler(move |_| drop(shared.clone()));
//! ```
//!
//! Nor `Sync`:
//!
//! ```compile_fail,E0277
//! fn assert_sync<T: Sync>(_: &T) {}
//! let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! assert_sync(&scope);
//! ```
//!
//! A scope created and dropped at once is flagged, like a guard bound to nothing:
//!
//! ```compile_fail
//! #![deny(unused_must_use)]
//! scoped_defer::Scope::<'static>::new();
//! ```
//!
//! So is a taken scope that is dropped at once, which runs the closures it took right there:
//!
//! ```compile_fail
//! #![deny(unused_must_use)]
//! let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! scope.take();
//! ```
//!
//! The scope form of `defer!` moves its captures, so a moved value cannot be used after:
//!
//! ```compile_fail,E0382
//! use scoped_defer::defer;
//! scoped_defer::scope(|s| {
//!     let name = String::from("moved");
//!     defer!(s => drop(name));
//!     println!("{name}");
//! });
//! ```
//!
//! A value lent out by `hold` cannot be used once the scope is dropped:
//!
//! ```compile_fail,E0505
//! let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let held = scope.hold(String::from("held"), drop);
//! drop(scope);
//! held.push('!');
//! ```
//!
//! Nor can the scope end early, by any of its ending methods, while a held value is lent out
//! (each would run or move the value under the reference):
//!
//! ```compile_fail,E0502
//! let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let held = scope.hold(0, drop);
//! scope.run_now();
//! *held += 1;
//! ```
//!
//! ```compile_fail,E0502
//! let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let held = scope.hold(0, drop);
//! scope.dismiss();
//! *held += 1;
//! ```
//!
//! ```compile_fail,E0502
//! let mut scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let held = scope.hold(0, drop);
//! let taken = scope.take();
//! *held += 1;
//! ```
//!
//! ```compile_fail,E0505
//! let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! let held = scope.hold(0, drop);
//! let _ = scope.finish();
//! *held += 1;
//! ```
//!
//! A `SendScope` refuses to hold a value that is not `Send`:
//!
//! ```compile_fail,E0277
//! let scope: scoped_defer::SendScope<'static> = scoped_defer::SendScope::new();
//! scope.hold(std::rc::Rc::new(()), drop);
//! ```
//!
//! `'env` is invariant: registering through `&self` must not let a shared reference shorten
//! it, or a closure borrowing a short-lived value could be stored in a longer-lived scope:
//!
//! ```compile_fail,E0597
//! let scope: scoped_defer::Scope<'static> = scoped_defer::Scope::new();
//! {
//!     let short_lived = String::from("gone");
//!     let shortened: &scoped_defer::Scope<'_> = &scope;
//!     shortened.defer(|| drop(short_lived.len()));
//! }
//! drop(scope);
//! ```
//!
//! A closure cannot reach its own scope, so nothing can register into a scope (or end it)
//! while it runs its closures:
//!
//! ```compile_fail,E0597
//! let scope = scoped_defer::Scope::new();
//! scope.defer(|| scope.defer(|| ()));
//! ```
