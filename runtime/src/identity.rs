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
use std::sync::OnceLock;

/// What `type_name` writes after the function's path for a closure in its body (once
/// more for an `async fn`, whose body is a closure of its own).
const CLOSURE: &str = "::{{closure}}";

/// The companions' names after the function's own name and `_` (see `fn_identity`).
const COMPANIONS: [&str; 5] = [
    "cache_key",
    "invalidate",
    "invalidate_async",
    "clear",
    "clear_async",
];

/// The identity of the function whose body (or companion's body) holds the closure
/// named `closure`: its path, without the closure's own segments, with the companions'
/// names written as the function's, and `%` and `|` escaped (the attribute ends the
/// identity with `|` when the key goes on).
///
/// `stem` is `::`, the function's name and `_` (`::load_`): wherever `stem` is followed
/// by `cache_key`, `invalidate` or `invalidate_async` (the companions `load_cache_key`,
/// `load_invalidate`, `load_invalidate_async`), all become `::load`. The function and its companions differ only in that segment,
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

/// A memoized function's name in its events and metrics: its identity (see
/// [`fn_identity`]) without generic arguments, so that a method is named with its type
/// (`app::Repo::load`, `<app::User as app::Named>::name`) and the instantiations of a
/// generic function share one label. Made at its first call and kept for the process:
/// one per function.
#[derive(Debug)]
pub struct FnName {
    name: OnceLock<&'static str>,
    /// Said once (WARN), naming the function, when the name is made: an attribute
    /// that is valid but most likely not what was meant.
    note: Option<&'static str>,
}

impl FnName {
    /// A name not made yet.
    #[allow(clippy::new_without_default)] // a `static`'s initializer: `const` only
    pub const fn new() -> Self {
        Self {
            name: OnceLock::new(),
            note: None,
        }
    }

    /// A name not made yet, whose function's attribute is worth a word at its first
    /// call (`note`, said once at WARN with the function's name).
    pub const fn noting(note: &'static str) -> Self {
        Self {
            name: OnceLock::new(),
            note: Some(note),
        }
    }

    /// The name, made from the first call's `closure` and `stem` (as for
    /// [`fn_identity`]).
    ///
    /// ```
    /// use cache_memoize::__private::FnName;
    ///
    /// static NAME: FnName = FnName::new();
    /// assert_eq!(NAME.get("app::Repo<u8>::load::{{closure}}", "::load_"), "app::Repo::load");
    /// assert_eq!(NAME.get("app::Repo<u16>::load::{{closure}}", "::load_"), "app::Repo::load");
    /// ```
    pub fn get(&'static self, closure: &'static str, stem: &str) -> &'static str {
        self.name.get_or_init(|| {
            let name: &'static str =
                Box::leak(without_generics(&fn_identity(closure, stem)).into_boxed_str());
            if let Some(note) = self.note {
                tracing::warn!(function = name, "{note}");
            }
            name
        })
    }

    /// [`get`](Self::get), for a function under `shared_key` with `template` storing
    /// the type named `stored`: if another function made its name with the same
    /// template and another type, the two overwrite each other's values, and this
    /// first call says so (WARN, naming both).
    pub fn get_sharing(
        &'static self,
        closure: &'static str,
        stem: &str,
        template: &'static str,
        stored: &'static str,
    ) -> &'static str {
        if let Some(name) = self.name.get() {
            return name;
        }
        let name = self.get(closure, stem);
        shares(template, name, stored);
        name
    }
}

/// Notes that `function` stores `stored` under the `shared_key` template `template`,
/// and says once (WARN) when another function stores another type under it: they
/// overwrite each other's values (each read of the other's is a miss).
fn shares(template: &'static str, function: &'static str, stored: &'static str) {
    static SHARED: std::sync::Mutex<Vec<(&'static str, &'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // One entry per function (the list is as long as the process's `shared_key`
    // functions), and one word: by the first of its calls to get here.
    if shared.iter().any(|(_, f, _)| *f == function) {
        return;
    }
    let other = shared
        .iter()
        .find(|(t, _, ty)| *t == template && *ty != stored)
        .map(|&(_, f, ty)| (f, ty));
    shared.push((template, function, stored));
    drop(shared);
    if let Some((other, other_stored)) = other {
        tracing::warn!(
            template,
            "`{other}` (returning `{other_stored}`) and `{function}` (returning `{stored}`) \
             share the key template `{template}` under `shared_key`: each overwrites the \
             other's values, and each read of the other's is a miss; give them different \
             templates, or the same return type"
        );
    }
}

/// `path` without the generic arguments that follow a name (`Repo<u8>` is `Repo`); a
/// qualified path's own angle brackets (`<T as Trait>::f`) stay.
fn without_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let (mut depth, mut after_name) = (0_usize, false);
    for c in path.chars() {
        match c {
            '<' if depth > 0 || after_name => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
        after_name = depth == 0 && (c.is_alphanumeric() || c == '_');
    }
    out
}

/// `path` with its last segment, when it is a companion's (`stem` and a companion's
/// name, then perhaps the function's generic arguments), written as the function's.
/// Only the last segment: a module or type named like a companion elsewhere in the
/// path is another item (`app::load_invalidate::load` is not `app::load::load`).
fn companions_renamed(path: &str, stem: &str) -> String {
    let (head, generics) = split_generics(path);
    let name = stem.strip_suffix('_').unwrap_or(stem);
    for companion in COMPANIONS {
        if let Some(function) = head
            .strip_suffix(companion)
            .and_then(|head| head.strip_suffix(stem))
        {
            return format!("{function}{name}{generics}");
        }
    }
    path.to_owned()
}

/// `path` split before the generic arguments that end it (`app::f<u8>`: `app::f`,
/// `<u8>`); all of it and nothing when it does not end in any.
fn split_generics(path: &str) -> (&str, &str) {
    if !path.ends_with('>') {
        return (path, "");
    }
    let mut depth = 0_usize;
    for (at, byte) in path.bytes().enumerate().rev() {
        match byte {
            b'>' => depth += 1,
            b'<' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (&path[..at], &path[at..]);
                }
            }
            _ => {}
        }
    }
    (path, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_generic_arguments_but_keep_qualified_paths() {
        assert_eq!(without_generics("app::Repo<u8>::load"), "app::Repo::load");
        assert_eq!(without_generics("app::f<alloc::vec::Vec<u8>>"), "app::f");
        assert_eq!(
            without_generics("<app::Repo<u8> as app::Named>::name"),
            "<app::Repo as app::Named>::name"
        );
        assert_eq!(without_generics("app::outer::inner"), "app::outer::inner");
    }

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
    fn only_the_last_segment_is_a_companion() {
        assert_eq!(
            id("app::f_invalidate::f::{{closure}}"),
            "app::f_invalidate::f"
        );
        assert_eq!(
            id("app::f_cache_key::f::{{closure}}"),
            "app::f_cache_key::f"
        );
        assert_eq!(id("app::f_invalidate::{{closure}}"), "app::f");
        assert_eq!(id("app::f_invalidate_async::{{closure}}"), "app::f");
        assert_eq!(id("app::f_cache_key<u8>::{{closure}}"), "app::f<u8>");
        assert_eq!(
            id("app::f<m::f_invalidate>::{{closure}}"),
            "app::f<m::f_invalidate>"
        );
        assert_eq!(
            id("app::f_invalidate<m::f_invalidate>::{{closure}}"),
            "app::f<m::f_invalidate>"
        );
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
