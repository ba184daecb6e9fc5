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

/// The companions' names after the function's own name and `_` (see `fn_identity`).
const COMPANIONS: [&str; 2] = ["cache_key", "invalidate"];

/// The identity of the function whose body (or companion's body) holds the closure
/// named `closure`: its path, without the closure's own segments, with the companions'
/// names written as the function's, and `%` and `|` escaped (the attribute ends the
/// identity with `|` when the key goes on).
///
/// `stem` is `::`, the function's name and `_` (`::load_`): wherever `stem` is followed
/// by `cache_key` or `invalidate` (the companions `load_cache_key`, `load_invalidate`),
/// both become `::load`. The function and its companions differ only in that segment,
/// so this one rewriting gives them one identity (whatever else the path holds).
///
/// ```
/// use cache_memoize::__private::fn_identity;
///
/// let own = fn_identity("app::Repo<u8>::load::{{closure}}", "::load_");
/// let key = fn_identity("app::Repo<u8>::load_cache_key::{{closure}}", "::load_");
/// assert_eq!(own, "app::Repo<u8>::load");
/// assert_eq!(key, own);
/// ```
pub fn fn_identity(closure: &'static str, stem: &str) -> Cow<'static, str> {
    let mut path = closure;
    while let Some(outer) = path.strip_suffix(CLOSURE) {
        path = outer;
    }
    // Runs on every call: one search, and one pass over the bytes without an early
    // exit (so it vectorizes); the rewriting only where one of them found something.
    let mut identity = if path.contains(stem) {
        Cow::Owned(companions_renamed(path, stem))
    } else {
        Cow::Borrowed(path)
    };
    // Only a `char` const argument can hold either (`Grid<'|'>`).
    let escapes = identity.as_bytes().iter().fold(0_u8, |found, &b| {
        found | u8::from(b == b'%') | u8::from(b == b'|')
    });
    if escapes != 0 {
        identity = Cow::Owned(identity.replace('%', "%25").replace('|', "%7C"));
    }
    identity
}

/// `path` with each `stem` followed by a companion's name written as `stem` without
/// its `_`.
fn companions_renamed(path: &str, stem: &str) -> String {
    let name = stem.strip_suffix('_').unwrap_or(stem);
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find(stem) {
        let after = &rest[at + stem.len()..];
        match COMPANIONS.iter().find(|c| after.starts_with(**c)) {
            Some(companion) => {
                out.push_str(&rest[..at]);
                out.push_str(name);
                rest = &after[companion.len()..];
            }
            None => {
                out.push_str(&rest[..at + stem.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(closure: &'static str) -> Cow<'static, str> {
        fn_identity(closure, "::f_")
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
        assert_eq!(id("app::f_g::f::{{closure}}"), "app::f_g::f");
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
            // Paths holding the stem, with and without a companion's name after it.
            (
                "app::f_cache_keys::f_x::f::{{closure}}",
                "app::f_cache_keys::f_x::f_cache_key::{{closure}}",
                "app::f_cache_keys::f_x::f_invalidate::{{closure}}",
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
