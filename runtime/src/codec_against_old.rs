//! `decode_with` after the hit-cost change (envelope checked, then decoded
//! once; the CRC-32 hasher made once and copied) against the chain of results before
//! it (7d4f5e6^), copied here: the same `Some`/`None` for every input.

use std::fmt::Debug;

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    Codec, FENCE_LEN, HEADER_LEN, Stamp, checksum, decode_bounded, decode_with, encode_absent,
    encode_with, logged, payload_as, seal,
};

/// `decode_with` as it was before 7d4f5e6.
fn old_decode_with<T: DeserializeOwned>(
    codec: Codec,
    bytes: &[u8],
    version: u32,
) -> Option<(T, Stamp)> {
    let decoded = payload_as::<T>(bytes, codec.format_byte(), version, 0).and_then(|rest| {
        let rest = rest
            .get(FENCE_LEN..)
            .ok_or("shorter than the fencing token")?;
        let (stamp, payload) = Stamp::read(rest).ok_or("shorter than the stamp")?;
        let value = match codec {
            Codec::Bincode => {
                let (value, read) =
                    decode_bounded::<T>(payload).map_err(|_| "payload does not decode")?;
                (read == payload.len()).then_some(value)
            }
            Codec::MessagePack => {
                let mut reader = payload;
                let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut reader))
                    .map_err(|_| "payload does not decode")?;
                reader.is_empty().then_some(value)
            }
        };
        Ok((value.ok_or("payload has trailing bytes")?, stamp))
    });
    logged::<T, (T, Stamp)>(decoded)
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<i32>,
}

fn report() -> Report {
    Report {
        id: 42,
        name: "r\u{e9}port".into(),
        tags: vec!["a".into(), String::new()],
        score: Some(-3),
    }
}

const CODECS: [Codec; 2] = [Codec::Bincode, Codec::MessagePack];
const STAMP: Stamp = Stamp {
    fresh_until_ms: 1_700_000_000_000,
    compute_ms: 250,
};

fn agree<T: DeserializeOwned + PartialEq + Debug>(
    bytes: &[u8],
    failures: &mut Vec<String>,
    what: &str,
) {
    for codec in CODECS {
        for version in [0, 3, u32::MAX] {
            let new = decode_with::<T>(codec, bytes, version);
            let old = old_decode_with::<T>(codec, bytes, version);
            if new != old {
                failures.push(format!(
                    "{what}: {} via {codec:?} v{version}: new {new:?}, old {old:?}",
                    std::any::type_name::<T>()
                ));
            }
        }
    }
}

fn agree_all(bytes: &[u8], failures: &mut Vec<String>, what: &str) {
    agree::<Report>(bytes, failures, what);
    agree::<u64>(bytes, failures, what);
    agree::<String>(bytes, failures, what);
    agree::<Vec<u8>>(bytes, failures, what);
    agree::<Option<u32>>(bytes, failures, what);
    agree::<()>(bytes, failures, what);
}

/// The encodings of several types, both codecs, two versions, and absent marks.
fn encodings() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for codec in CODECS {
        for version in [0, 3] {
            let mut add = |what: &str, bytes: Result<Vec<u8>, crate::error::BoxError>| {
                if let Ok(bytes) = bytes {
                    out.push((format!("{what} {codec:?} v{version}"), bytes));
                }
            };
            add("report", encode_with(codec, &report(), version, 7, STAMP));
            add("u64", encode_with(codec, &u64::MAX, version, 7, STAMP));
            add(
                "string",
                encode_with(codec, &"text".to_string(), version, 7, STAMP),
            );
            add(
                "bytes",
                encode_with(codec, &vec![0_u8, 1, 255], version, 7, STAMP),
            );
            add("none", encode_with(codec, &None::<u32>, version, 7, STAMP));
            add("unit", encode_with(codec, &(), version, 7, Stamp::FOREVER));
            add("absent", encode_absent(codec, version, 9, STAMP));
        }
    }
    out
}

#[test]
fn decode_with_agrees_with_the_old_on_valid_corrupt_short_and_foreign_bytes() {
    let mut failures = Vec::new();
    for foreign in [
        &b""[..],
        b"cmz",
        b"foreign bytes, not an envelope",
        &[0; 64],
    ] {
        agree_all(foreign, &mut failures, "foreign");
    }
    for (what, bytes) in encodings() {
        agree_all(&bytes, &mut failures, &what);
        for len in 0..bytes.len() {
            agree_all(
                &bytes[..len],
                &mut failures,
                &format!("{what} cut at {len}"),
            );
            if len >= HEADER_LEN {
                // Cut, then sealed again: the checksum holds, the payload is short.
                let mut cut = bytes[..len].to_vec();
                seal(&mut cut);
                agree_all(&cut, &mut failures, &format!("{what} cut at {len}, sealed"));
            }
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                agree_all(&bad, &mut failures, &format!("{what} ^{flip:#x} at {at}"));
                if at >= HEADER_LEN {
                    seal(&mut bad);
                    agree_all(
                        &bad,
                        &mut failures,
                        &format!("{what} ^{flip:#x} at {at}, sealed"),
                    );
                }
            }
        }
        for extra in [&[0_u8][..], &[0xC0], &[1, 2, 3]] {
            let mut long = bytes.clone();
            long.extend_from_slice(extra);
            agree_all(&long, &mut failures, &format!("{what} + {extra:?}"));
            seal(&mut long);
            agree_all(&long, &mut failures, &format!("{what} + {extra:?}, sealed"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]
    #[test]
    fn decode_with_agrees_with_the_old_on_random_envelopes(
        body in proptest::collection::vec(any::<u8>(), 0..80),
        pick in 0_usize..100,
    ) {
        // A real header (any type, codec, version) before random bytes, sealed.
        let all = encodings();
        let (_, head) = &all[pick % all.len()];
        let mut bytes = head[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&body);
        seal(&mut bytes);
        let mut failures = Vec::new();
        agree_all(&bytes, &mut failures, "random");
        prop_assert!(failures.is_empty(), "{:?}", failures);
    }

    #[test]
    fn the_copied_hasher_is_crc32(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(checksum(&bytes), crc32fast::hash(&bytes));
    }
}
