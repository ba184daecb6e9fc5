//! The shard hash after the hit-cost change (the tag's tail read as one
//! overlapping word) against the byte-at-a-time tail before it (7d4f5e6^), copied
//! here; and a key's lock, refresh, fence and chunk keys on its shard.

use proptest::prelude::*;

use super::{MemoryBackend, hash_tag, mix, tag_hash, words_hash};
use crate::key::make_cache_key;

/// `tag_hash` as it was before 7d4f5e6.
fn old_tag_hash(rest: &[u8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const CLOSE: u64 = ONES * b'}' as u64;
    let mut hash = 0;
    let mut chunks = rest.chunks_exact(8);
    let mut len = 0_usize;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let x = word ^ CLOSE;
        let found = x.wrapping_sub(ONES) & !x & HIGH;
        if found != 0 {
            let at = (found.trailing_zeros() / 8) as usize;
            if len + at == 0 {
                return None;
            }
            let kept = if at == 0 {
                0
            } else {
                word & (u64::MAX >> (64 - 8 * at))
            };
            return Some(mix(mix(hash, kept), (len + at) as u64));
        }
        hash = mix(hash, word);
        len += 8;
    }
    let mut last = [0; 8];
    for (at, &b) in chunks.remainder().iter().enumerate() {
        if b == b'}' {
            if len + at == 0 {
                return None;
            }
            return Some(mix(mix(hash, u64::from_le_bytes(last)), (len + at) as u64));
        }
        last[at] = b;
    }
    None
}

/// Bytes next to `}` (0x7D) and to the word trick's borrows and carries.
const FILL: [u8; 12] = [
    0x00, 0x01, 0x7C, 0x7E, 0x7F, 0x80, 0xFC, 0xFD, 0xFE, 0xFF, b'a', b'{',
];

fn same(rest: &[u8]) -> Result<(), String> {
    let (new, old) = (tag_hash(rest), old_tag_hash(rest));
    if new != old {
        return Err(format!("{rest:?}: new {new:?}, old {old:?}"));
    }
    // And the specification, for a key made of `{` and `rest`.
    let mut key = vec![b'{'];
    key.extend_from_slice(rest);
    if let Ok(key) = std::str::from_utf8(&key) {
        let spec = words_hash(hash_tag(key));
        if new.unwrap_or_else(|| words_hash(key.as_bytes())) != spec {
            return Err(format!("{key:?}: not the specification's hash"));
        }
    }
    Ok(())
}

#[test]
fn tag_hash_is_the_old_byte_at_a_time_hash_for_every_short_tag() {
    let mut failures = Vec::new();
    for len in 0..=24_usize {
        for fill in FILL {
            // No `}`, then a `}` at every position, then two.
            let base = vec![fill; len];
            if let Err(why) = same(&base) {
                failures.push(why);
            }
            for at in 0..len {
                let mut rest = base.clone();
                rest[at] = b'}';
                if let Err(why) = same(&rest) {
                    failures.push(why);
                }
                for later in at + 1..len {
                    let mut rest = rest.clone();
                    rest[later] = b'}';
                    if let Err(why) = same(&rest) {
                        failures.push(why);
                    }
                }
                // A byte just below or above the `}`.
                for next in [at.wrapping_sub(1), at + 1] {
                    if next < len {
                        for other in FILL {
                            let mut rest = rest.clone();
                            rest[next] = other;
                            if let Err(why) = same(&rest) {
                                failures.push(why);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{:#?}",
        &failures[..failures.len().min(10)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn tag_hash_matches_the_old_on_random_bytes(
        rest in proptest::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => Just(b'}'), 1 => proptest::sample::select(FILL.to_vec())],
            0..40,
        )
    ) {
        prop_assert_eq!(same(&rest), Ok(()));
    }

    #[test]
    fn a_key_and_its_lock_refresh_and_chunk_keys_share_a_shard(
        key in "[ -~\u{e9}\u{3a9}]{1,40}",
    ) {
        let cache = MemoryBackend::with_capacity(super::MAX_SHARDS * super::MIN_SHARD_BYTES);
        let key = make_cache_key(&key);
        let shard = cache.shard_of(key.as_str());
        prop_assert_eq!(shard, cache.shard_of(&key.lock_key()));
        prop_assert_eq!(shard, cache.shard_of(&key.refresh_key()));
        prop_assert_eq!(shard, cache.shard_of(&key.chunk_key(7, 3)));
        prop_assert_eq!(shard, cache.shard_of(key.as_str()), "deterministic");
    }
}

/// Not from 7d4f5e6 (the old tail gives the same hashes): the empty key, without a
/// prefix, is `{}`, an empty hash tag, so its value and its lock are hashed whole and
/// land apart (two memory shards, which `write_all` copes with; two Redis Cluster
/// slots, where the scripts that touch both fail with CROSSSLOT).
#[test]
fn the_empty_key_keeps_its_value_and_lock_together() {
    let cache = MemoryBackend::with_capacity(super::MAX_SHARDS * super::MIN_SHARD_BYTES);
    let key = make_cache_key("");
    assert_eq!(hash_tag(key.as_str()), hash_tag(&key.lock_key()), "{key}");
    assert_eq!(
        cache.shard_of(key.as_str()),
        cache.shard_of(&key.lock_key())
    );
}
