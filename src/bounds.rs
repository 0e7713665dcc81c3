//! The traits in the bounds of the registration methods. They exist so that the two common
//! mistakes get a compiler error that says what to write instead.

use crate::error::BoxError;

/// What a cleanup given to [`defer`](crate::Scope::defer) (or `hold`, `defer_on_error`,
/// `defer_on_success`) returns: only `()`.
///
/// Without it, `s.defer(|| file.sync_all())` gets the compiler's advice to add a semicolon,
/// which would discard the error in silence. A cleanup that can fail belongs to
/// [`defer_fallible`](crate::Scope::defer_fallible) or
/// [`hold_fallible`](crate::Scope::hold_fallible), which keep its error.
///
/// ```compile_fail,E0277
/// let scope = scoped_defer::Scope::new();
/// scope.defer(|| std::fs::remove_file("scratch.tmp")); // use defer_fallible
/// ```
#[diagnostic::on_unimplemented(
    message = "a cleanup given to `defer` or `hold` must return `()`, not `{Self}`",
    label = "this cleanup returns `{Self}`",
    note = "a cleanup that can fail goes to `defer_fallible` or `hold_fallible`, which keep its error",
    note = "to discard the value on purpose, end the closure's body with `;`"
)]
pub trait CleanupOutput: sealed::Unit {}

impl CleanupOutput for () {}

/// `|| panic!()` returns `!` (edition 2024), which is as good as `()`.
impl CleanupOutput for sealed::Never {}

/// The errors a fallible cleanup may return: anything that converts into a [`BoxError`],
/// such as an error type that is `Send + Sync + 'static`, a `String` or a `&'static str`.
///
/// ```compile_fail,E0277
/// let scope = scoped_defer::Scope::new();
/// scope.defer_fallible(|| Err(42)); // an integer is not an error
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a cleanup",
    label = "this cleanup's error is `{Self}`",
    note = "cleanup errors are kept as `Box<dyn Error + Send + Sync>`: return an error type that is `Send + Sync + 'static`, a `String` or a `&'static str`"
)]
pub trait CleanupError: Into<BoxError> {}

impl<E: Into<BoxError>> CleanupError for E {}

mod sealed {
    /// Only `()` and `!`.
    pub trait Unit {}
    impl Unit for () {}
    impl Unit for Never {}

    /// Names `!`, which stable Rust allows only as a function's return type.
    pub(super) trait Output {
        type Type;
    }
    impl<T> Output for fn() -> T {
        type Type = T;
    }
    pub(super) type Never = <fn() -> ! as Output>::Type;
}
