//! Cache keys: the global prefix, escaping of interpolated parts, and a digest for long
//! keys (Djblets' `make_cache_key`).
//!
//! A finished key is `{<prefix>:<key>}`. The braces are a Redis Cluster hash tag: the
//! value, its lock (`_lock_:` + key) and its chunks (key + suffix) all hash to the same
//! slot, so the atomic scripts that touch several of them run on a cluster too.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use sha2::{Digest, Sha256};

/// Keys longer than this (in bytes) are cut and end in their SHA-256 digest.
pub const MAX_KEY_LEN: usize = 240;

/// What goes before a key's lock key.
const LOCK_PREFIX: &str = "_lock_:";
const FENCE_PREFIX: &str = "_fence_:";
const REFRESH_PREFIX: &str = "_refresh_:";

/// The prefix. Each one set is leaked (prefixes are set a handful of times in a
/// process's life), so threads can keep a plain `&'static str` copy of it.
static KEY_PREFIX: RwLock<&'static str> = RwLock::new("");

/// Bumped by every [`set_key_prefix`]: a thread reads the prefix from its own copy while
/// this has not moved, so making a key takes no lock and no reference count.
static PREFIX_GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's copy of the prefix, and the generation it was read at.
    static PREFIX: Cell<(u64, &'static str)> = const { Cell::new((u64::MAX, "")) };
}

/// Sets the prefix put before every key, such as a site or deployment name, so several
/// applications can share one Redis (Djblets' site prefix). Affects keys made after
/// the call. Control characters and spaces in it are escaped.
///
/// Set it at start-up (or a handful of times), not per request: each prefix set is
/// kept for the life of the process, so that making a key reads it without a lock.
///
/// ```
/// cache_memoize::set_key_prefix("shop-eu");
/// assert_eq!(cache_memoize::make_cache_key("cart:7").as_str(), "{shop-eu:cart:7}");
/// # cache_memoize::set_key_prefix("");
/// ```
pub fn set_key_prefix(prefix: impl Into<String>) {
    let prefix: String = prefix.into();
    let sanitized: &'static str = Box::leak(sanitize(&prefix).into_owned().into_boxed_str());
    let mut current = KEY_PREFIX.write().unwrap_or_else(PoisonError::into_inner);
    let replaced = std::mem::replace(&mut *current, sanitized);
    // Under the write lock: a thread that sees the new generation reads the new prefix.
    PREFIX_GENERATION.fetch_add(1, Ordering::AcqRel);
    drop(current);
    // Said, so that two processes that disagree on the prefix (and so share nothing)
    // show it in their logs.
    tracing::info!(prefix = sanitized, replaced, "cache key prefix set");
}

/// The key prefix now in use (`""` for none).
pub(crate) fn key_prefix() -> &'static str {
    with_key_prefix(|prefix| prefix)
}

/// Runs `f` with the current prefix (this thread's copy, refreshed when it is stale).
fn with_key_prefix<R>(f: impl FnOnce(&'static str) -> R) -> R {
    let generation = PREFIX_GENERATION.load(Ordering::Acquire);
    let (seen, mut prefix) = PREFIX.get();
    if seen != generation {
        // The generation read again under the lock: a `set_key_prefix` racing with this
        // read leaves a generation that makes the next key read it again.
        let current = KEY_PREFIX.read().unwrap_or_else(PoisonError::into_inner);
        prefix = *current;
        PREFIX.set((PREFIX_GENERATION.load(Ordering::Acquire), prefix));
    }
    f(prefix)
}

/// A finished key, as stored in the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of this key's lock: `_lock_:` + the key.
    pub fn lock_key(&self) -> String {
        format!("{LOCK_PREFIX}{}", self.0)
    }

    /// The key of the mark a failed refresh of this key's stale value leaves for
    /// `fail_safe` (the fleet's throttle: refreshes back off while it lives):
    /// `_refresh_:` + the key. Not a lock: refreshes take the key's own lock
    /// ([`lock_key`](Self::lock_key)), the one lock of every write of the key, and a
    /// miss never waits for the throttle.
    pub fn refresh_key(&self) -> String {
        format!("{REFRESH_PREFIX}{}", self.0)
    }

    /// The key where fencing counters used to live: `_fence_:` + the key. Nothing is
    /// stored there any more: a lock's fencing tokens are a hybrid logical clock (the
    /// backend's clock, ordered after the token the stored value was written under; see
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token)), kept in no key of
    /// their own. Such keys left by an earlier version expire by themselves (30 days
    /// after their last use) and may be deleted.
    #[deprecated(note = "fencing tokens no longer use a counter key; nothing is stored at it")]
    pub fn fence_key(&self) -> String {
        format!("{FENCE_PREFIX}{}", self.0)
    }

    /// The key of chunk `index` of the memoized iterator write `generation` at this
    /// key. Each write of a sequence picks a generation of its own (recorded in its
    /// manifest), so a refresh never touches the chunks of the committed sequence;
    /// [`committed_chunk_keys`](crate::committed_chunk_keys) names those.
    pub fn chunk_key(&self, generation: u64, index: usize) -> String {
        format!("{}:chunk:{generation:016x}:{index}", self.0)
    }
}

/// How many bytes of a large value one of its chunks carries (see `large.rs`).
pub(crate) const LARGE_CHUNK_BYTES: usize = 512 * 1024;

/// The name of chunk `index` of `count` of the large value written in `slot` of `key`:
/// under the key's own hash tag (on a cluster every chunk lives on the key's node), and
/// naming the family's size, so that an in-process store can refuse a family larger
/// than it from its first chunk ([`large_family_bytes`]).
pub(crate) fn large_chunk_key(key: &str, slot: u8, index: usize, count: usize) -> String {
    format!("{key}:large:{slot}:{index}:{count}")
}

/// The most bytes the large value whose chunk is named `name` holds (its chunk count
/// times [`LARGE_CHUNK_BYTES`]); `None` for any other name.
pub(crate) fn large_family_bytes(name: &str) -> Option<usize> {
    let (_, tail) = name.rsplit_once("}:large:")?;
    let mut parts = tail.split(':');
    let (_slot, _index, count) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    count.parse::<usize>().ok()?.checked_mul(LARGE_CHUNK_BYTES)
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Makes the backend key for `key`: the global prefix, control characters, spaces and
/// braces escaped (so the key has exactly one hash tag, its own), and a SHA-256 digest in place of the tail when it would exceed
/// [`MAX_KEY_LEN`] bytes.
///
/// `key` is taken as written: build it from values with [`escape_key_part`] so that a
/// value containing `:` cannot forge another key (the attribute does this for you).
///
/// ```
/// use cache_memoize::{escape_key_part, make_cache_key};
///
/// let user = "ann:admin";
/// let key = make_cache_key(&format!("profile:{}", escape_key_part(user)));
/// assert_eq!(key.as_str(), "{profile:ann%3Aadmin}");
/// assert_eq!(key.lock_key(), "_lock_:{profile:ann%3Aadmin}");
/// ```
pub fn make_cache_key(key: &str) -> CacheKey {
    make_cache_key_in(String::new(), key)
}

thread_local! {
    /// A spare key buffer: a memoized call makes its key in it and gives it back when
    /// it ends, so a hit allocates nothing for its key.
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// Buffers larger than this are not kept as this thread's spare.
const SPARE_MAX: usize = 1024;

/// [`make_cache_key`], in this thread's spare buffer; give it back with [`recycle`].
#[inline]
pub(crate) fn pooled_cache_key(key: &str) -> CacheKey {
    // Not `SPARE.take()`: that panics once the thread's locals are destroyed (a call
    // made from another thread-local's destructor); a new buffer then.
    make_cache_key_in(SPARE.try_with(Cell::take).unwrap_or_default(), key)
}

/// Keeps `key`'s buffer as this thread's spare.
#[inline]
pub(crate) fn recycle(key: &mut CacheKey) {
    let buffer = std::mem::take(&mut key.0);
    if buffer.capacity() <= SPARE_MAX {
        let _ = SPARE.try_with(|spare| spare.set(buffer));
    }
}

/// [`make_cache_key`], written into `out` (whatever it held is dropped).
fn make_cache_key_in(out: String, key: &str) -> CacheKey {
    // Checked here first: most keys need no escaping (no `Cow` to make and drop).
    if plain_key(key.as_bytes()) {
        return written_key(out, key);
    }
    escaped_key(out, key)
}

/// [`make_cache_key_in`] for a key with something to escape (kept apart, so that the
/// plain key's writing is inlined).
#[inline(never)]
fn escaped_key(out: String, key: &str) -> CacheKey {
    written_key(out, &sanitize(key))
}

/// The key `{prefix:key}` for a `key` already sanitized, written into `out`.
// Inlined into the plain key's path (every call), out of the escaped key's.
#[allow(clippy::inline_always)]
#[inline(always)]
fn written_key(mut out: String, key: &str) -> CacheKey {
    out.clear();
    // One allocation at most: `{prefix:key}` written directly.
    with_key_prefix(|prefix| {
        out.reserve(prefix.len() + key.len() + 3);
        out.push('{');
        if !prefix.is_empty() {
            out.push_str(prefix);
            out.push(':');
        }
    });
    out.push_str(key);
    // An empty body (the empty key, no prefix) would be an empty hash tag, which Redis
    // Cluster ignores: the value and its lock would hash apart. It is written as a long
    // body is, by its digest.
    if out.len() - 1 > MAX_BODY_LEN || out.len() == 1 {
        out = format!("{{{}}}", shorten(out.split_off(1)));
    } else {
        out.push('}');
    }
    CacheKey(out)
}

/// The hash tag's two braces count against the length limit.
const MAX_BODY_LEN: usize = MAX_KEY_LEN - 2;

/// Cuts `body` to fit (or, empty, gives it one), ending it in a space and the SHA-256
/// hex digest of the whole body.
fn shorten(body: String) -> String {
    if body.len() <= MAX_BODY_LEN && !body.is_empty() {
        return body;
    }
    let digest = Sha256::digest(body.as_bytes());
    let mut keep = MAX_BODY_LEN - 1 - 2 * digest.len();
    while !body.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut short = String::with_capacity(MAX_BODY_LEN);
    short.push_str(&body[..keep]);
    // A space: escaped in every key as written (and in the prefix), so no short key can
    // be spelled like a long key's digest.
    short.push(' ');
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(short, "{byte:02x}");
    }
    short
}

/// Escapes one interpolated part of a key: `%` → `%25`, `:` → `%3A`, braces, spaces
/// and control characters likewise, so no value can forge a key separator or a
/// cluster hash tag.
///
/// ```
/// assert_eq!(cache_memoize::escape_key_part("a:b c%"), "a%3Ab%20c%25");
/// ```
pub fn escape_key_part(part: &str) -> Cow<'_, str> {
    const PLAIN: [bool; 256] = plain_ascii(b"%:{}");
    escape(part, &PLAIN, |c| matches!(c, '%' | ':' | '{' | '}'))
}

/// Escapes what backends reject in keys (spaces and control characters) and braces,
/// so the key's own `{…}` is its only Redis Cluster hash tag: whatever the key says,
/// its value, lock and chunks share one slot.
pub(crate) fn sanitize(key: &str) -> Cow<'_, str> {
    const PLAIN: [bool; 256] = plain_ascii(b"{}");
    // Most keys need nothing: checked eight bytes at a time first (this runs on every
    // call), then as any part is.
    if plain_key(key.as_bytes()) {
        return Cow::Borrowed(key);
    }
    escape(key, &PLAIN, |c| matches!(c, '{' | '}'))
}

/// Whether every byte of `key` is printable ASCII (`!` to `~`) other than a brace:
/// nothing [`sanitize`] escapes. Eight bytes at a time; each test below is exact for
/// the word as a whole (it flags a word that has such a byte, and no other).
#[inline]
fn plain_key(key: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below `!` (a control character or a space).
    let below = |x: u64| x.wrapping_sub(ONES * 0x21) & !x & HIGH;
    // A byte above `~` (DEL, or any byte of a non-ASCII character).
    let above = |x: u64| (x.wrapping_add(ONES) | x) & HIGH;
    // A zero byte: a byte equal to the one `x` was XORed with.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let plain = |x: u64| {
        below(x)
            | above(x)
            | zero(x ^ (ONES * u64::from(b'{')))
            | zero(x ^ (ONES * u64::from(b'}')))
            == 0
    };
    let word = |at: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&key[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let len = key.len();
    if len < 8 {
        const PLAIN: [bool; 256] = plain_ascii(b"{}");
        return key.iter().all(|&byte| PLAIN[usize::from(byte)]);
    }
    let mut at = 0;
    while at + 8 < len {
        if !plain(word(at)) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes (overlapping the word before when the length is not a
    // multiple of eight).
    plain(word(len - 8))
}

/// The printable ASCII characters other than `escaped`, as a table indexed by byte.
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

/// Escapes `text`'s control characters, whitespace and what `also` names; `plain` is
/// the table of the ASCII bytes that need nothing (`also` must agree with it).
fn escape<'a>(text: &'a str, plain: &[bool; 256], also: impl Fn(char) -> bool) -> Cow<'a, str> {
    // Most keys are printable ASCII with nothing to escape: checked a byte at a time
    // against a table, without decoding characters (this runs on every hit).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_escape_separators_percent_braces_spaces_and_controls() {
        assert_eq!(escape_key_part("plain-Ω"), "plain-Ω");
        assert_eq!(escape_key_part("a:b"), "a%3Ab");
        assert_eq!(escape_key_part("100%"), "100%25");
        assert_eq!(escape_key_part("{tag}"), "%7Btag%7D");
        assert_eq!(escape_key_part("a b\n\t\u{7f}"), "a%20b%0A%09%7F");
        assert_eq!(escape_key_part("\u{2028}"), "%E2%80%A8");
    }

    #[test]
    fn escaping_keeps_distinct_parts_distinct() {
        assert_ne!(escape_key_part("a:b"), escape_key_part("a%3Ab"));
    }

    #[test]
    fn whole_keys_escape_only_spaces_controls_and_braces() {
        assert_eq!(sanitize("a:b%c d\r"), "a:b%c%20d%0D");
        assert_eq!(sanitize("}abc{"), "%7Dabc%7B");
    }

    #[test]
    fn a_key_with_braces_keeps_one_hash_tag_for_value_and_lock() {
        // Redis hashes the text between the first `{` and the next `}`.
        fn hash_tag(key: &str) -> &str {
            let open = key.find('{').map_or(0, |i| i + 1);
            let close = key[open..].find('}').map_or(key.len(), |i| open + i);
            &key[open..close]
        }
        for written in ["}abc", "{x}", "a{b", "{}"] {
            let key = make_cache_key(written);
            assert_eq!(
                hash_tag(key.as_str()),
                hash_tag(&key.lock_key()),
                "{written}"
            );
            assert_eq!(
                hash_tag(key.as_str()),
                hash_tag(&key.chunk_key(7, 0)),
                "{written}"
            );
            assert_eq!(key.as_str().matches(['{', '}']).count(), 2, "{written}");
        }
    }

    #[test]
    fn long_keys_end_in_a_digest_of_the_whole_key() {
        let long = "x".repeat(500);
        let other = format!("{}y", "x".repeat(499));
        let (a, b) = (shorten(long.clone()), shorten(other));
        assert_eq!(a.len(), MAX_BODY_LEN);
        assert_ne!(a, b);
        let digest = Sha256::digest(long.as_bytes());
        let hex = digest.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        assert!(a.ends_with(&format!(" {hex}")));
    }

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        let cut = shorten("é".repeat(200));
        assert!(cut.len() <= MAX_BODY_LEN);
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn made_keys_stay_within_the_limit_inside_their_hash_tag() {
        let long = make_cache_key(&"k".repeat(500));
        assert_eq!(long.as_str().len(), MAX_KEY_LEN);
        assert!(long.as_str().starts_with("{kkk") && long.as_str().ends_with('}'));
        let exact = make_cache_key(&"k".repeat(MAX_BODY_LEN));
        assert_eq!(exact.as_str(), format!("{{{}}}", "k".repeat(MAX_BODY_LEN)));
        assert_ne!(make_cache_key(&"k".repeat(MAX_BODY_LEN + 1)), exact);
    }

    #[test]
    fn a_key_at_the_limit_is_kept_whole() {
        let exact = "k".repeat(MAX_BODY_LEN);
        assert_eq!(shorten(exact.clone()), exact);
    }
}
