//! The key rendering after the hit-cost change (`key::plain_key`, the plain
//! key written without a `Cow`) against the implementation before it (7d4f5e6^),
//! copied here: every key must render byte for byte as before, with and without a
//! prefix (a change would be a cold cache, or a collision).

use std::borrow::Cow;

use cache_memoize::{MAX_KEY_LEN, make_cache_key, set_key_prefix};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// The old rendering, with the prefix passed in (the old `make_cache_key_in`).
mod old {
    use std::fmt::Write as _;

    use super::{Cow, Digest, MAX_KEY_LEN, Sha256};

    const MAX_BODY_LEN: usize = MAX_KEY_LEN - 2;

    pub(crate) fn make_cache_key(prefix: &str, key: &str) -> String {
        let key = sanitize(key);
        let mut out = String::new();
        out.reserve(prefix.len() + key.len() + 3);
        out.push('{');
        if !prefix.is_empty() {
            out.push_str(prefix);
            out.push(':');
        }
        out.push_str(&key);
        if out.len() - 1 > MAX_BODY_LEN {
            out = format!("{{{}}}", shorten(out.split_off(1)));
        } else {
            out.push('}');
        }
        out
    }

    fn shorten(body: String) -> String {
        if body.len() <= MAX_BODY_LEN {
            return body;
        }
        let digest = Sha256::digest(body.as_bytes());
        let mut keep = MAX_BODY_LEN - 1 - 2 * digest.len();
        while !body.is_char_boundary(keep) {
            keep -= 1;
        }
        let mut short = String::with_capacity(MAX_BODY_LEN);
        short.push_str(&body[..keep]);
        short.push(' ');
        for byte in digest {
            let _ = write!(short, "{byte:02x}");
        }
        short
    }

    pub(crate) fn sanitize(key: &str) -> Cow<'_, str> {
        const PLAIN: [bool; 256] = plain_ascii(b"{}");
        escape(key, &PLAIN, |c| matches!(c, '{' | '}'))
    }

    const fn plain_ascii(escaped: &[u8]) -> [bool; 256] {
        let mut set = [false; 256];
        let mut byte = b'!';
        while byte <= b'~' {
            set[byte as usize] = true;
            byte += 1;
        }
        let mut i = 0;
        while i < escaped.len() {
            set[escaped[i] as usize] = false;
            i += 1;
        }
        set
    }

    fn escape<'a>(text: &'a str, plain: &[bool; 256], also: impl Fn(char) -> bool) -> Cow<'a, str> {
        if text.bytes().all(|byte| plain[usize::from(byte)]) {
            return Cow::Borrowed(text);
        }
        let needs = |c: char| c.is_control() || c.is_whitespace() || also(c);
        if !text.chars().any(needs) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if needs(c) {
                let mut utf8 = [0; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "%{byte:02X}");
                }
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }
}

/// Raw prefixes, set with `set_key_prefix` (which sanitizes them; the old rendering
/// is given the old sanitized form).
const PREFIXES: [&str; 5] = ["", "app", "shop eu{1}", "p\u{e9}:%\t", "0123456789abcdef"];

/// Characters around every boundary the word tests have: the printable range's ends,
/// braces and their neighbours, `:` `%`, controls, DEL, non-ASCII (letters, a
/// control, whitespace, a separator, an emoji).
const CHARS: [char; 28] = [
    'a',
    'Z',
    '0',
    '!',
    '~',
    ' ',
    '{',
    '}',
    '|',
    'z',
    ':',
    '%',
    '\0',
    '\u{1}',
    '\t',
    '\n',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{a0}',
    '\u{e9}',
    '\u{3a9}',
    '\u{2028}',
    '\u{3000}',
    '\u{feff}',
    '\u{1f600}',
    '\u{fffd}',
];

fn check(prefix: &str, key: &str) -> Result<(), String> {
    let new = make_cache_key(key);
    let old = old::make_cache_key(&old::sanitize(prefix), key);
    // The one key changed on purpose since: the empty key without a prefix, once `{}`
    // (an empty hash tag, which put its value and lock apart), is written by its digest.
    if prefix.is_empty() && key.is_empty() {
        return if old == "{}" && new.as_str().starts_with("{ ") && new.as_str().len() == 67 {
            Ok(())
        } else {
            Err(format!(
                "the empty key: new {:?}, old {old:?}",
                new.as_str()
            ))
        };
    }
    if new.as_str() == old {
        Ok(())
    } else {
        Err(format!(
            "prefix {prefix:?}, key {key:?}: new {:?}, old {old:?}",
            new.as_str()
        ))
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    let char_ = prop_oneof![
        4 => proptest::char::range('!', '~'),
        2 => proptest::sample::select(CHARS.to_vec()),
        1 => any::<char>(),
    ];
    prop_oneof![
        3 => proptest::collection::vec(char_.clone(), 0..40),
        1 => proptest::collection::vec(char_, 200..300),
    ]
    .prop_map(|chars| chars.into_iter().collect())
}

/// One test (the prefix is process-wide): exhaustively, a plain key of every length
/// 0..40 with one character of `CHARS` at every position, then random keys; under
/// each prefix.
#[test]
fn keys_render_as_before_the_word_at_a_time_check() {
    let mut failures = Vec::new();
    for prefix in PREFIXES {
        set_key_prefix(prefix);
        for len in 0..40 {
            let base: Vec<char> = (0..len)
                .map(|i: usize| char::from(b'!' + ((i * 7) % 94) as u8))
                .map(|c| if c == '{' || c == '}' { 'x' } else { c })
                .collect();
            let plain: String = base.iter().collect();
            if let Err(why) = check(prefix, &plain) {
                failures.push(why);
            }
            for at in 0..len {
                for c in CHARS {
                    let mut chars = base.clone();
                    chars[at] = c;
                    let key: String = chars.into_iter().collect();
                    if let Err(why) = check(prefix, &key) {
                        failures.push(why);
                    }
                }
            }
        }
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 4000,
            ..ProptestConfig::default()
        });
        let result = runner.run(&key_strategy(), |key| {
            check(prefix, &key).map_err(TestCaseError::fail)
        });
        if let Err(err) = result {
            failures.push(format!("prefix {prefix:?}: {err}"));
        }
    }
    set_key_prefix("");
    assert!(
        failures.is_empty(),
        "{} differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}
