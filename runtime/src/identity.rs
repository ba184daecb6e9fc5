//! A memoized function's identity, the first part of its keys: the path the compiler
//! gives a closure written in the function's body, which names the function item
//! itself with every generic argument in force (see the README's "Keys").
//!
//! `core::any::type_name` of such a closure reads, for example:
//!
//! | function | the closure's type name |
//! |---|---|
//! | `fn report` in `app` | `app::report::{{closure}}` |
//! | `fn parse_as::<u32>` | `app::parse_as<u32>::{{closure}}` |
//! | `Repo::<u8>::load` | `app::Repo<u8>::load::{{closure}}` |
//! | `<User as Named>::name` | `<app::User as app::Named>::name::{{closure}}` |
//! | `fn inner` inside `fn outer` | `app::outer::inner::{{closure}}` |
//! | an `async fn` | one more `::{{closure}}` (its body) |
//!
//! A local item (`fn __f() {}`, `struct __M;`) would name the function too, but not the
//! generic arguments of the `impl` around it (`Repo<_>`); a closure has them all.

use std::borrow::Cow;

/// What `type_name` writes after the function's path for a closure in its body (once
/// more for an `async fn`, whose body is a closure of its own).
const CLOSURE: &str = "::{{closure}}";

/// The identity of the function whose body (or companion's body) holds the closure
/// named `closure`: its path, without the closure's own segments, the companions'
/// names written as the function's (`companions`, such as `::f_cache_key` and
/// `::f_invalidate`, become `name`, such as `::f`, wherever they occur: the function
/// and its companions give one identity by the same rewriting), `%` and `|` escaped
/// (the attribute ends the identity with `|` when the key goes on).
///
/// ```
/// use cache_memoize::__private::fn_identity;
///
/// let companions = ["::load_cache_key", "::load_invalidate"];
/// let own = fn_identity("app::Repo<u8>::load::{{closure}}", "::load", companions);
/// let key = fn_identity("app::Repo<u8>::load_cache_key::{{closure}}", "::load", companions);
/// assert_eq!(own, "app::Repo<u8>::load");
/// assert_eq!(key, own);
/// ```
pub fn fn_identity(closure: &'static str, name: &str, companions: [&str; 2]) -> Cow<'static, str> {
    let mut path = closure;
    while let Some(outer) = path.strip_suffix(CLOSURE) {
        path = outer;
    }
    let mut identity = Cow::Borrowed(path);
    for companion in companions {
        if identity.contains(companion) {
            identity = Cow::Owned(identity.replace(companion, name));
        }
    }
    // Only a `char` const argument can hold either (`Grid<'|'>`): checked a byte at a
    // time, since this runs on every call.
    if identity.bytes().any(|b| b == b'%' || b == b'|') {
        identity = Cow::Owned(identity.replace('%', "%25").replace('|', "%7C"));
    }
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPANIONS: [&str; 2] = ["::f_cache_key", "::f_invalidate"];

    fn id(closure: &'static str) -> Cow<'static, str> {
        fn_identity(closure, "::f", COMPANIONS)
    }

    #[test]
    fn the_closures_segments_are_dropped() {
        assert_eq!(id("app::f::{{closure}}"), "app::f");
        assert_eq!(id("app::f<u8>::{{closure}}::{{closure}}"), "app::f<u8>");
        assert_eq!(
            id("app::outer::{{closure}}::f::{{closure}}"),
            "app::outer::{{closure}}::f"
        );
        assert!(matches!(id("app::f::{{closure}}"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_function_and_its_companions_have_one_identity() {
        for (own, key, invalidate) in [
            (
                "app::Repo<u8>::f::{{closure}}",
                "app::Repo<u8>::f_cache_key::{{closure}}",
                "app::Repo<u8>::f_invalidate::{{closure}}",
            ),
            // Generic arguments after the name, the companions' names inside them.
            (
                "app::f<app::f_cache_key::T>::{{closure}}::{{closure}}",
                "app::f_cache_key<app::f_cache_key::T>::{{closure}}",
                "app::f_invalidate<app::f_cache_key::T>::{{closure}}",
            ),
            // Nested in a function named like a companion.
            (
                "app::f_cache_key::f::{{closure}}",
                "app::f_cache_key::f_cache_key::{{closure}}",
                "app::f_cache_key::f_invalidate::{{closure}}",
            ),
        ] {
            assert_eq!(id(key), id(own), "{key}");
            assert_eq!(id(invalidate), id(own), "{invalidate}");
        }
    }

    #[test]
    fn the_end_mark_never_occurs_inside_an_identity() {
        assert_eq!(id("app::Grid<'|'>::f::{{closure}}"), "app::Grid<'%7C'>::f");
        assert_eq!(id("app::Grid<'%'>::f::{{closure}}"), "app::Grid<'%25'>::f");
        assert_ne!(
            id("app::Grid<'%'>::f::{{closure}}"),
            id("app::Grid<'%25'>::f::{{closure}}")
        );
    }
}
