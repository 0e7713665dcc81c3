//! Errors: failed cleanups, scopes whose body or cleanups failed, and rejected closures.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::error::Error;
use core::fmt;
use core::panic::Location;

/// The error type of a failed cleanup, as collected by a [`Scope`](crate::Scope).
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Every error returned by the fallible cleanups of one scope, in the order they happened
/// (which is the reverse of registration). Never empty.
///
/// `Display` lists every error's message, so [`source`](Error::source) is `None`: a chain
/// printed the way `anyhow` does (`{:#}`) shows each message once. The errors themselves, with
/// their own sources, are in [`iter`](CleanupErrors::iter).
///
/// With `std`, `?` converts it into an [`io::Error`](std::io::Error) (of the first error's
/// kind if that is an `io::Error`, else `Other`) that wraps it.
///
/// ```
/// use scoped_defer::Scope;
///
/// let scope = Scope::new();
/// scope.defer_fallible(|| Err::<(), _>("flush failed"));
/// scope.defer_fallible(|| Err::<(), _>("unlock failed"));
/// let errors = scope.finish().unwrap_err();
/// assert_eq!(errors.len(), 2);
/// assert_eq!(errors.to_string(), "2 cleanups failed: unlock failed; flush failed");
/// ```
pub struct CleanupErrors(Vec<BoxError>);

impl CleanupErrors {
    /// Wraps `errors`; `None` if there are none.
    pub(crate) fn from_vec(errors: Vec<BoxError>) -> Option<Self> {
        (!errors.is_empty()).then_some(CleanupErrors(errors))
    }

    /// The number of errors (at least one).
    #[allow(clippy::len_without_is_empty)] // never empty
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first error to happen.
    #[must_use]
    pub fn first(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0[0]
    }

    /// The errors, in the order they happened.
    #[must_use]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &(dyn Error + Send + Sync + 'static)> {
        self.0.iter().map(|e| &**e)
    }

    /// The errors, in the order they happened.
    #[must_use]
    pub fn into_vec(self) -> Vec<BoxError> {
        self.0
    }
}

impl fmt::Debug for CleanupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl fmt::Display for CleanupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            [only] => write!(f, "cleanup failed: {only}"),
            all => {
                write!(f, "{} cleanups failed: ", all.len())?;
                for (i, error) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{error}")?;
                }
                Ok(())
            }
        }
    }
}

/// `Display` already shows every error; see the type's docs.
impl Error for CleanupErrors {}

impl<'a> IntoIterator for &'a CleanupErrors {
    type Item = &'a (dyn Error + Send + Sync + 'static);
    type IntoIter = core::iter::Map<
        core::slice::Iter<'a, BoxError>,
        fn(&'a BoxError) -> &'a (dyn Error + Send + Sync + 'static),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|error| &**error)
    }
}

#[cfg(feature = "std")]
impl From<CleanupErrors> for std::io::Error {
    /// Wraps the errors in an `io::Error` of the first error's kind, if that is an `io::Error`
    /// (else `Other`); `get_ref` and `into_inner` give them back.
    fn from(errors: CleanupErrors) -> Self {
        let kind = errors
            .first()
            .downcast_ref::<std::io::Error>()
            .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
        std::io::Error::new(kind, errors)
    }
}

impl IntoIterator for CleanupErrors {
    type Item = BoxError;
    type IntoIter = alloc::vec::IntoIter<BoxError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Why [`try_scope`](crate::try_scope) (or
/// [`try_for_each_scoped`](crate::try_for_each_scoped)) failed.
///
/// Following Java's try-with-resources, the body's error is the primary one and the errors of
/// cleanups that failed after it are kept as *suppressed*; if the body succeeded, the cleanup
/// errors are the error.
///
/// # Into your error type
///
/// - `anyhow::Error`, `eyre::Report`, `Box<dyn Error + Send + Sync>`: `?` works, since
///   `ScopeError<E>` implements [`Error`] for any `E` that is `Debug + Display` (anyhow's and
///   eyre's errors are not themselves `std` errors). Its `Display` shows the body's error
///   with its whole chain (as `{:#}` shows it: anyhow's and eyre's contexts and causes), then
///   the suppressed errors; its [`source`](Error::source) is `None`, since the body error may
///   not be an `Error` (a body error's own `source` is not followed: use
///   [`body_error`](ScopeError::body_error) to reach it).
/// - [`io::Error`](std::io::Error) (with `std`): `?` works. A body error with nothing
///   suppressed comes back as it was; otherwise the `io::Error` keeps the body error's kind
///   (or the first cleanup error's) and wraps the whole `ScopeError`, so the suppressed errors
///   are in its message and behind `get_ref`/`into_inner`, never dropped.
/// - Your own error enum: give it a variant that holds the `ScopeError` (with `thiserror`,
///   `#[error(transparent)] Scope(#[from] ScopeError<MyError>)`), or, if it implements
///   `From<CleanupErrors>`, decide with [`into_body_error`](ScopeError::into_body_error):
///   `Err(e.into_body_error().unwrap_or_else(MyError::from))` keeps the body's error, or the
///   cleanup errors when only they failed (this drops suppressed errors: read them first with
///   [`cleanup_errors`](ScopeError::cleanup_errors) if you need them).
///
/// ```
/// use scoped_defer::{ScopeError, try_scope};
///
/// let result: Result<(), ScopeError<&str>> = try_scope(|s| {
///     s.defer_fallible(|| Err::<(), _>("close failed"));
///     Err("write failed")
/// });
/// let error = result.unwrap_err();
/// assert_eq!(error.body_error(), Some(&"write failed"));
/// assert_eq!(error.cleanup_errors().unwrap().first().to_string(), "close failed");
/// ```
#[derive(Debug)]
pub enum ScopeError<E> {
    /// The body returned an error; cleanups that failed afterwards are attached.
    Body {
        /// The body's error: the primary one.
        error: E,
        /// Errors of cleanups that failed after the body did.
        suppressed: Option<CleanupErrors>,
    },
    /// The body succeeded, but at least one cleanup failed.
    Cleanup(CleanupErrors),
}

impl<E> ScopeError<E> {
    /// The body's error, if the body failed.
    #[must_use]
    pub fn body_error(&self) -> Option<&E> {
        match self {
            ScopeError::Body { error, .. } => Some(error),
            ScopeError::Cleanup(_) => None,
        }
    }

    /// The errors of failed cleanups: the suppressed ones if the body failed too.
    #[must_use]
    pub fn cleanup_errors(&self) -> Option<&CleanupErrors> {
        match self {
            ScopeError::Body { suppressed, .. } => suppressed.as_ref(),
            ScopeError::Cleanup(errors) => Some(errors),
        }
    }

    /// The body's error, or the cleanup errors if only cleanups failed.
    ///
    /// # Errors
    ///
    /// The cleanup errors, when the body itself succeeded.
    pub fn into_body_error(self) -> Result<E, CleanupErrors> {
        match self {
            ScopeError::Body { error, .. } => Ok(error),
            ScopeError::Cleanup(errors) => Err(errors),
        }
    }
}

impl<E> From<CleanupErrors> for ScopeError<E> {
    fn from(errors: CleanupErrors) -> Self {
        ScopeError::Cleanup(errors)
    }
}

/// The body's error in its alternate form (`{:#}`), which for `anyhow::Error` and
/// `eyre::Report` is its whole chain ("reading config: file not found"), then the suppressed
/// cleanup errors; see the type's docs.
impl<E: fmt::Display> fmt::Display for ScopeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Body {
                error,
                suppressed: None,
            } => write!(f, "{error:#}"),
            ScopeError::Body {
                error,
                suppressed: Some(s),
            } => {
                write!(f, "{error:#} (and {s})")
            }
            ScopeError::Cleanup(errors) => write!(f, "{errors}"),
        }
    }
}

#[cfg(feature = "std")]
impl From<ScopeError<std::io::Error>> for std::io::Error {
    /// The body's error as it was if nothing was suppressed; otherwise an `io::Error` of the
    /// same kind that wraps the whole `ScopeError`, suppressed errors included. A cleanup
    /// failure alone converts as [`CleanupErrors`] does.
    fn from(error: ScopeError<std::io::Error>) -> Self {
        match error {
            ScopeError::Body {
                error,
                suppressed: None,
            } => error,
            ScopeError::Body { .. } => {
                let kind = error.body_error().map(std::io::Error::kind);
                std::io::Error::new(kind.unwrap_or(std::io::ErrorKind::Other), error)
            }
            ScopeError::Cleanup(errors) => errors.into(),
        }
    }
}

/// For any body error that can be shown, not only one that implements [`Error`]: so that
/// `?` converts a `ScopeError<anyhow::Error>` (or `eyre::Report`), which does not, into
/// `anyhow::Error`. `Display` carries the body error's whole chain instead of
/// [`source`](Error::source), which is `None`.
impl<E: fmt::Debug + fmt::Display> Error for ScopeError<E> {}

/// [`Scope::try_defer`](crate::Scope::try_defer) was refused because the scope's limit of
/// pending closures was reached. The closure is handed back, neither run nor dropped.
///
/// ```
/// let mut scope = scoped_defer::Scope::with_limit(1);
/// scope.try_defer(|| ()).unwrap();
/// let refused = scope.try_defer(|| ()).unwrap_err();
/// assert_eq!(refused.limit(), 1);
/// let closure = refused.into_closure(); // still ours to run or drop
/// closure();
/// ```
pub struct LimitExceeded<F> {
    closure: F,
    limit: usize,
    site: &'static Location<'static>,
    busiest: Option<(&'static Location<'static>, usize)>,
}

impl<F> LimitExceeded<F> {
    pub(crate) fn new(
        closure: F,
        limit: usize,
        site: &'static Location<'static>,
        busiest: Option<(&'static Location<'static>, usize)>,
    ) -> Self {
        LimitExceeded {
            closure,
            limit,
            site,
            busiest,
        }
    }

    /// The limit that was reached.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Where the refused closure was registered.
    #[must_use]
    pub fn site(&self) -> &'static Location<'static> {
        self.site
    }

    /// The line with the most pending closures in the scope, and how many: in a pile-up, the
    /// `defer` inside the loop. `None` if the limit is zero.
    #[must_use]
    pub fn busiest_site(&self) -> Option<(&'static Location<'static>, usize)> {
        self.busiest
    }

    /// The refused closure, neither run nor dropped.
    pub fn into_closure(self) -> F {
        self.closure
    }

    /// Drops the refused closure (unrun) and keeps the error, which is then `'static`,
    /// `Send` and `Sync`: for `?` into `Box<dyn Error + Send + Sync>` or `anyhow::Error`
    /// when the closure borrows.
    ///
    /// ```
    /// use std::error::Error;
    /// use scoped_defer::{LimitExceeded, Scope};
    ///
    /// fn register<'a>(scope: &Scope<'a>, name: &'a str) -> Result<(), Box<dyn Error + Send + Sync>> {
    ///     scope
    ///         .try_defer(move || println!("closing {name}"))
    ///         .map_err(LimitExceeded::drop_closure)?;
    ///     Ok(())
    /// }
    ///
    /// let scope = Scope::with_limit(1);
    /// register(&scope, "a").unwrap();
    /// let refused = register(&scope, "b").unwrap_err();
    /// assert!(refused.to_string().starts_with(
    ///     "the scope already holds its limit of 1 pending closures, 1 of them registered at"
    /// ));
    /// ```
    pub fn drop_closure(self) -> LimitExceeded<()> {
        LimitExceeded {
            closure: (),
            limit: self.limit,
            site: self.site,
            busiest: self.busiest,
        }
    }
}

impl<F> fmt::Display for LimitExceeded<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the scope already holds its limit of {} pending closures",
            self.limit
        )?;
        if let Some((site, count)) = self.busiest {
            write!(
                f,
                ", {count} of them registered at {site}: a defer inside a loop? Give each \
                 iteration its own scope with for_each_scoped or try_for_each_scoped"
            )?;
        }
        write!(f, " (refused: the closure registered at {})", self.site)
    }
}

impl<F> Error for LimitExceeded<F> {}

impl<F> fmt::Debug for LimitExceeded<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitExceeded")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}
