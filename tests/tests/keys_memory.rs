//! Keys that cannot lie (issue 10) and keys by identity (issue 19), on the embedded
//! in-process store; a long key's digest is no short key's spelling.

use cache_memoize::{escape_key_part, make_cache_key, memoize};
use cache_memoize_tests::Fixture;

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
