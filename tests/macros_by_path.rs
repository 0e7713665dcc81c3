//! The macros work when called by full path without importing anything else from the crate,
//! so every path they expand to must go through `$crate`.
#![no_implicit_prelude]

#[test]
fn macros_expand_without_imports() {
    let counter = ::std::cell::Cell::new(0);
    {
        ::scoped_defer::defer! { counter.set(counter.get() + 1); }
        #[cfg(feature = "std")]
        {
            ::scoped_defer::defer_on_success! { counter.set(counter.get() + 10); }
            ::scoped_defer::defer_on_unwind! { counter.set(counter.get() + 100); }
        }
    }
    let outcome_guards = if ::std::cfg!(feature = "std") { 10 } else { 0 };
    ::std::assert_eq!(counter.get(), 1 + outcome_guards);

    let scope: ::scoped_defer::Scope<'_> = ::scoped_defer::Scope::new();
    let counter_ref = &counter;
    ::scoped_defer::defer!(scope => counter_ref.set(counter_ref.get() + 1000));
    ::std::mem::drop(scope);
    ::std::assert_eq!(counter.get(), 1001 + outcome_guards);
}
