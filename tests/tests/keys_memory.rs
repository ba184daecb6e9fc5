//! Keys that cannot lie (issue 10) and keys by identity (issue 19), on the embedded
//! in-process store; a long key's digest is no short key's spelling, and same-named
//! functions in modules named after a companion have keys of their own.

use cache_memoize::{cache_memoize, escape_key_part, make_cache_key, memoize};
use cache_memoize_tests::{Fixture, registry_guard};

macro_rules! on_memory {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                cache_memoize_tests::keys_suite::$scenario();
            }
        )*
    };
}

cache_memoize_tests::key_scenarios!(on_memory);

macro_rules! identity_on_memory {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                cache_memoize_tests::identity_suite::$scenario();
            }
        )*
    };
}

cache_memoize_tests::identity_scenarios!(identity_on_memory);

/// A key over 240 bytes becomes `<first bytes>-<sha256 hex>`; a short key spelled
/// exactly like that (reachable through escaped key parts: `-` and hex digits are not
/// escaped) is the same backend key, and the envelope does not name its key.
#[test]
fn a_short_key_spelled_like_a_long_keys_digest_is_another_key() {
    let f = Fixture::memory();
    let opts = f.opts();
    let template = |id: &str| format!("doc:{}", escape_key_part(id));
    let long_id = format!("{}{}", f.key("x").replace(':', "-"), "a".repeat(300));
    let long_key = template(&long_id);
    let digested = make_cache_key(&long_key);
    let body = digested
        .as_str()
        .strip_prefix("{doc:")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default()
        .to_owned();
    assert!(!body.is_empty());
    let crafted_key = template(&body);
    assert_ne!(crafted_key, long_key, "two different inputs");

    let secret: String = memoize(&long_key, &opts, || "the long id's document".to_owned());
    assert_eq!(secret, "the long id's document");
    let other: String = memoize(&crafted_key, &opts, || {
        "the crafted id's document".to_owned()
    });
    assert_eq!(
        other, "the crafted id's document",
        "the crafted id was served the long id's value"
    );
}

/// Two same-named functions in two modules, `load::load` and `load_invalidate::load`
/// (or `load_cache_key::load`): `fn_identity` rewrites every `::load_` followed by a
/// companion's name (`cache_key`, `invalidate`) anywhere in the path, not only the
/// function's own segment, so `keys_memory::load_invalidate::load` becomes
/// `keys_memory::load::load`: the identity of the other function.
///
/// Interleaving: `load::load(7)` is called (stored); then `load_invalidate::load(7)`.
///
/// Expected: each returns its own value ("README: Keys": the identity names the
/// function item itself). Got: the second returns the first's value ("load 7").
#[test]
fn same_named_functions_in_modules_named_after_a_companion_have_keys_of_their_own() {
    let _registry = registry_guard();
    assert_eq!(load::load(7), "load 7");
    assert_eq!(load_invalidate::load(7), "load_invalidate 7");
    assert_ne!(
        load::load_cache_key(7).as_str(),
        load_invalidate::load_cache_key(7).as_str()
    );
}

mod load {
    use super::cache_memoize;

    #[cache_memoize(expire = "10m")]
    pub(crate) fn load(x: u32) -> String {
        format!("load {x}")
    }
}

mod load_invalidate {
    use super::cache_memoize;

    #[cache_memoize(expire = "10m")]
    pub(crate) fn load(x: u32) -> String {
        format!("load_invalidate {x}")
    }
}
