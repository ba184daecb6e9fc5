//! The stored form of a value: an envelope, then the payload in the function's
//! [`Codec`] (bincode unless chosen otherwise).
//!
//! ```text
//! magic "cmz" | format (1 byte) | type fingerprint (8, LE) | user version (4, LE) | CRC-32 of the rest (4, LE) | rest
//! ```
//!
//! A memoized value's `rest` is the fencing token it was written under (8 bytes, LE:
//! its place in the key's order of writes, see `fence`), its [`Stamp`] (when it stops
//! being fresh, how long it took to compute: 12 bytes), then its payload; an
//! iterator's chunks and manifest carry neither. The format byte names what follows (2:
//! bincode without a stamp, for iterators; 6: fenced and stamped bincode; 7: fenced and
//! stamped `MessagePack`; 4 and 5, stamped without a fence, are no longer written), so
//! bytes written one way read as a miss any other way, never as a wrong value. The
//! checksum covers the token and the stamp: a damaged stamp cannot make an old value
//! look fresh.
//!
//! The token sits at a fixed place, [`FENCE_AT`], right after the envelope, where the
//! backends' store steps read it without decoding anything (the Redis scripts with
//! `GETRANGE`, so a large value is never copied to read it): keep them in step with
//! [`written_fence`].
//!
//! Anything that does not match what the reader expects (another type, another
//! version, truncated, corrupted or foreign bytes) decodes as `None`: a miss, which the
//! caller recomputes and overwrites. The checksum is verified before anything is
//! decoded, so corrupted bytes that would still decode never become a wrong value.
//! Decoding never panics; a string or buffer length it reads can allocate at most about
//! 32 times the input's size before failing (bincode's limit, set from the input).

use std::any::type_name;
use std::mem::{align_of, size_of};

use bincode::config::{Configuration, Limit, standard};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

const MAGIC: &[u8; 3] = b"cmz";
/// The format byte of bincode payloads (and of every iterator chunk and manifest).
const FORMAT_VERSION: u8 = 2;
/// The format byte of fenced and stamped bincode values (4, stamped without a fence, is
/// retired: such bytes read as a miss).
const FORMAT_STAMPED_BINCODE: u8 = 6;
/// The format byte of fenced and stamped `MessagePack` values (5 is retired).
const FORMAT_STAMPED_MSGPACK: u8 = 7;

/// The format byte of a large value's manifest (`large.rs`): the value's own envelope,
/// fencing token and stamp, then where its chunks are, in place of its payload.
const FORMAT_CHUNKED: u8 = 8;

/// The format bytes of values that carry a fencing token (for the Redis scripts).
#[cfg(feature = "redis")]
pub(crate) const FENCED_FORMATS: [u8; 3] = [
    FORMAT_STAMPED_BINCODE,
    FORMAT_STAMPED_MSGPACK,
    FORMAT_CHUNKED,
];

/// Where a memoized value's fencing token starts: right after the envelope. The Redis
/// scripts read it there too (`fence_of` in `backend/redis/scripts.rs`).
pub(crate) const FENCE_AT: usize = HEADER_LEN;
/// The fencing token's length (a `u64`, little-endian).
const FENCE_LEN: usize = 8;

/// Whether a store written under `fence` comes after the value written under `stored`
/// in the key's order: a larger token, or a stored value with no token (0: none, an
/// iterator's manifest, foreign bytes), which any holder of the lock replaces.
pub(crate) fn newer(fence: u64, stored: u64) -> bool {
    stored == 0 || stored < fence
}

/// When a memoized value stops being fresh and how long it took to compute, written
/// with it (inside the checksum) by whoever computed it, so that any reader can tell a
/// fresh value from a stale one without asking the backend for its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Milliseconds since the Unix epoch, on the writer's clock.
    pub(crate) fresh_until_ms: u64,
    /// How long the computation took, in milliseconds (`XFetch`'s delta).
    pub(crate) compute_ms: u32,
}

impl Stamp {
    const LEN: usize = 12;

    /// A stamp that never goes stale.
    pub(crate) const FOREVER: Self = Self {
        fresh_until_ms: u64::MAX,
        compute_ms: 0,
    };

    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fresh_until_ms.to_le_bytes());
        out.extend_from_slice(&self.compute_ms.to_le_bytes());
    }

    #[inline]
    fn read(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (stamp, rest) = bytes.split_at_checked(Self::LEN)?;
        let (until, took) = stamp.split_at(8);
        let stamp = Self {
            fresh_until_ms: u64::from_le_bytes(until.try_into().ok()?),
            compute_ms: u32::from_le_bytes(took.try_into().ok()?),
        };
        Some((stamp, rest))
    }
}

/// Whether `bytes` start like a memoized value (fenced and stamped) or a large value's
/// manifest (which carries the value's token and stamp), checking nothing else.
fn is_stamped(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
        && bytes.get(MAGIC.len()).is_some_and(|&format| {
            format == FORMAT_STAMPED_BINCODE
                || format == FORMAT_STAMPED_MSGPACK
                || format == FORMAT_CHUNKED
        })
}

/// Where a memoized value's payload starts: after its envelope, token and stamp.
const PAYLOAD_AT: usize = FENCE_AT + FENCE_LEN + Stamp::LEN;

/// The head of a large value's manifest: the value's envelope, fencing token and stamp
/// (so that the store steps order it and the near tier times it as the value itself),
/// marked as a manifest; its body follows, then [`seal`]. `None` for bytes that are
/// not a memoized value.
pub(crate) fn manifest_head(value: &[u8]) -> Option<Vec<u8>> {
    let head = value.get(..PAYLOAD_AT).filter(|_| {
        value.starts_with(MAGIC)
            && value.get(MAGIC.len()).is_some_and(|&format| {
                format == FORMAT_STAMPED_BINCODE || format == FORMAT_STAMPED_MSGPACK
            })
    })?;
    let mut out = head.to_vec();
    out[MAGIC.len()] = FORMAT_CHUNKED;
    Some(out)
}

/// Whether a large value's manifest `bytes` head a value of type `T` written for
/// `version`, so that its chunks are worth reading (any other is a miss, found without
/// reading them).
pub(crate) fn manifest_holds<T>(bytes: &[u8], version: u32, tags: u64) -> bool {
    let version_at = TYPE_PRINT_AT + 8;
    type_print(bytes) == Some(&(fingerprint::<T>() ^ tags).to_le_bytes())
        && bytes.get(version_at..version_at + 4) == Some(&version.to_le_bytes()[..])
}

/// Whether `bytes` are headed as a large value's manifest, checking nothing else (a
/// cheap test before [`manifest_body`]).
#[inline]
pub(crate) fn is_manifest(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC) && bytes.get(MAGIC.len()) == Some(&FORMAT_CHUNKED)
}

/// The body of a large value's manifest written by [`manifest_head`] and [`seal`],
/// checked against its checksum; `None` for anything else (a value, foreign bytes).
pub(crate) fn manifest_body(bytes: &[u8]) -> Option<&[u8]> {
    if !(bytes.starts_with(MAGIC) && bytes.get(MAGIC.len()) == Some(&FORMAT_CHUNKED)) {
        return None;
    }
    let rest = bytes.get(HEADER_LEN..)?;
    (recorded_checksum(bytes)? == checksum(rest)).then_some(())?;
    bytes.get(PAYLOAD_AT..)
}

/// When the memoized value in `bytes` stops being fresh (milliseconds since the Unix
/// epoch, on its writer's clock), read from its envelope without checking or decoding
/// anything else; `None` for anything that is not a stamped value (locks, iterator
/// chunks and manifests, foreign bytes). For the near cache, which keeps a copy no
/// longer than that.
#[cfg(feature = "redis")]
pub(crate) fn fresh_until_ms(bytes: &[u8]) -> Option<u64> {
    if !is_stamped(bytes) {
        return None;
    }
    let (stamp, _) = Stamp::read(bytes.get(FENCE_AT + FENCE_LEN..)?)?;
    Some(stamp.fresh_until_ms)
}

/// The fencing token the memoized value in `bytes` was written under, read from its
/// envelope without checking or decoding anything else (the store steps order a write
/// after it); 0 for anything else (absent, an iterator's manifest, foreign bytes): no
/// place in the order, so any holder of the key's lock may replace it.
pub(crate) fn written_fence(bytes: &[u8]) -> u64 {
    if !is_stamped(bytes) {
        return 0;
    }
    bytes
        .get(FENCE_AT..FENCE_AT + FENCE_LEN)
        .and_then(|field| field.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// How a memoized value's payload is written.
///
/// [`Bincode`](Codec::Bincode), the default, is compact and fast but not
/// self-describing: types whose `Deserialize` asks the format what comes next
/// (`serde_json::Value`, internally tagged enums `#[serde(tag = "…")]`, `#[serde(flatten)]`,
/// fields with `#[serde(skip_serializing_if = "…")]`) are written but cannot be read
/// back. The attribute checks this once per type and process and says so at WARN.
/// [`MessagePack`](Codec::MessagePack) is self-describing (fields by name) and reads
/// such types back, at some cost in size and speed (see BENCHMARKS.md).
///
/// ```
/// use cache_memoize::{Codec, MemoizeOptions, memoize};
///
/// let opts = MemoizeOptions::new().codec(Codec::MessagePack);
/// let value: Vec<u32> = memoize("codec-doc", &opts, || vec![1, 2]);
/// assert_eq!(value, [1, 2]);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2 (serde, standard configuration): the default.
    #[default]
    Bincode,
    /// `MessagePack` through `rmp-serde`, structs as maps: self-describing.
    MessagePack,
}

impl Codec {
    fn format_byte(self) -> u8 {
        match self {
            Codec::Bincode => FORMAT_STAMPED_BINCODE,
            Codec::MessagePack => FORMAT_STAMPED_MSGPACK,
        }
    }
}

/// Encodes the memoized value `value` of type `T` with `codec`, tagged with `version`,
/// written under the fencing token `fence` and stamped with `stamp`.
pub(crate) fn encode_with<T: Serialize>(
    codec: Codec,
    value: &T,
    version: u32,
    fence: u64,
    stamp: Stamp,
) -> Result<Vec<u8>, BoxError> {
    encode_tagged(codec, value, version, 0, fence, stamp)
}

/// [`encode_with`] for a value whose tags had the epochs `tags` (mixed, see
/// `crate::tags`; 0: untagged) when it was computed: the mix is folded into the type's
/// fingerprint, so a reader whose tags' epochs have moved since reads it as a miss.
pub(crate) fn encode_tagged<T: Serialize>(
    codec: Codec,
    value: &T,
    version: u32,
    tags: u64,
    fence: u64,
    stamp: Stamp,
) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::with_capacity(HEADER_LEN + FENCE_LEN + Stamp::LEN + 64);
    write_header_as::<T>(&mut out, codec.format_byte(), version, tags);
    out.extend_from_slice(&fence.to_le_bytes());
    stamp.write(&mut out);
    match codec {
        Codec::Bincode => encode_item(value, &mut out)?,
        Codec::MessagePack => rmp_serde::encode::write_named(&mut out, value)?,
    }
    seal(&mut out);
    Ok(out)
}

/// What a computation that returned a value not to cache (a `None` under
/// `cache_none = false`) stores in the value's place, under the key's lock: a value of
/// this type reads as a miss to every reader of the key (another type), and takes its
/// place in the key's order of writes, so no older value stays served.
#[derive(Serialize)]
struct Absent;

/// Whether `bytes` are the mark of an absent value (see [`Absent`]): read as a miss.
pub(crate) fn is_absent_mark(bytes: &[u8]) -> bool {
    // Made once: the near tier asks on each of its hits.
    static ABSENT: once_cell::sync::Lazy<[u8; 8]> =
        once_cell::sync::Lazy::new(|| fingerprint::<Absent>().to_le_bytes());
    bytes.starts_with(MAGIC) && type_print(bytes) == Some(&*ABSENT)
}

/// Where the envelope keeps its type's fingerprint: after the magic and the format
/// byte.
const TYPE_PRINT_AT: usize = MAGIC.len() + 1;

/// The type fingerprint `bytes` carry, if they are long enough to carry one.
fn type_print(bytes: &[u8]) -> Option<&[u8; 8]> {
    bytes.get(TYPE_PRINT_AT..TYPE_PRINT_AT + 8)?.try_into().ok()
}

/// Encodes the mark of an absent value (see [`Absent`]).
pub(crate) fn encode_absent(
    codec: Codec,
    version: u32,
    fence: u64,
    stamp: Stamp,
) -> Result<Vec<u8>, BoxError> {
    encode_with(codec, &Absent, version, fence, stamp)
}

/// Decodes a value written by [`encode_with`] for the same codec, `T` and `version`,
/// with its stamp; `None` (logged at debug) for anything else.
pub(crate) fn decode_with<T: DeserializeOwned>(
    codec: Codec,
    bytes: &[u8],
    version: u32,
) -> Option<(T, Stamp)> {
    decode_tagged(codec, bytes, version, 0)
}

/// [`decode_with`] for a reader whose tags have the epochs `tags` now (mixed; 0:
/// untagged): a value computed under other epochs is a miss.
pub(crate) fn decode_tagged<T: DeserializeOwned>(
    codec: Codec,
    bytes: &[u8],
    version: u32,
    tags: u64,
) -> Option<(T, Stamp)> {
    // The envelope checked first, the value decoded last and returned as it is (on
    // every hit: the value is moved once, not through a chain of results).
    let (stamp, payload) = match stamped_payload::<T>(codec, bytes, version, tags) {
        Ok(found) => found,
        Err(reason) => return unreadable::<T, _>(reason),
    };
    let value = match codec {
        Codec::Bincode => match decode_bounded::<T>(payload) {
            Ok((value, read)) if read == payload.len() => value,
            Ok(_) => return unreadable::<T, _>("payload has trailing bytes"),
            Err(_) => return unreadable::<T, _>("payload does not decode"),
        },
        Codec::MessagePack => {
            let mut reader = payload;
            match T::deserialize(&mut rmp_serde::Deserializer::new(&mut reader)) {
                Ok(value) if reader.is_empty() => value,
                Ok(_) => return unreadable::<T, _>("payload has trailing bytes"),
                Err(_) => return unreadable::<T, _>("payload does not decode"),
            }
        }
    };
    Some((value, stamp))
}

/// The stamp and payload of a value written by [`encode_with`] for `codec`, `T` and
/// `version`, or why the bytes are not one.
fn stamped_payload<T>(
    codec: Codec,
    bytes: &[u8],
    version: u32,
    tags: u64,
) -> Result<(Stamp, &[u8]), &'static str> {
    let rest = payload_as::<T>(bytes, codec.format_byte(), version, tags)?;
    let rest = rest
        .get(FENCE_LEN..)
        .ok_or("shorter than the fencing token")?;
    Stamp::read(rest).ok_or("shorter than the stamp")
}

/// Bytes that are not a `Tag`'s value: a miss, logged (see [`logged`]).
#[cold]
fn unreadable<Tag, V>(reason: &'static str) -> Option<V> {
    logged::<Tag, V>(Err(reason))
}

/// The envelope's CRC-32 of `bytes`. The hasher is made once (making one detects the
/// CPU's features every time) and copied for each use.
#[inline]
fn checksum(bytes: &[u8]) -> u32 {
    static HASHER: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut hasher = HASHER.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// Whether `value` reads back through `codec` as itself (what it reads back writes the
/// same bytes again): `Err` says why not.
pub(crate) fn round_trips<T: Serialize + DeserializeOwned>(
    codec: Codec,
    value: &T,
) -> Result<(), String> {
    let bytes = encode_with(codec, value, 0, 0, Stamp::FOREVER).map_err(|err| err.to_string())?;
    let Some((read, _)) = decode_with::<T>(codec, &bytes, 0) else {
        return Err(format!("{codec:?} cannot read back what it wrote"));
    };
    match encode_with(codec, &read, 0, 0, Stamp::FOREVER) {
        Ok(again) if again == bytes => Ok(()),
        _ => Err(format!("{codec:?} reads back another value than it wrote")),
    }
}
/// The envelope's length; the checksum is its last 4 bytes.
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 1 + 8 + 4 + 4;

/// Encodes `value` of type `T`, tagged with `version` (the envelope's own tests; values
/// and manifests are written by [`encode_with`], with their fencing token).
#[cfg(test)]
pub(crate) fn encode<T: Serialize>(value: &T, version: u32) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    write_header::<T>(&mut out, version);
    encode_item(value, &mut out)?;
    seal(&mut out);
    Ok(out)
}

/// Decodes bytes written by [`encode`] for the same `T` and `version`; `None` (logged
/// at debug) for anything else.
#[cfg(test)]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], version: u32) -> Option<T> {
    let decoded = payload::<T>(bytes, version).and_then(|payload| {
        let (value, read) = decode_bounded::<T>(payload).map_err(|_| "payload does not decode")?;
        if read == payload.len() {
            Ok(value)
        } else {
            Err("payload has trailing bytes")
        }
    });
    logged::<T, T>(decoded)
}

/// Writes the envelope for values of type `Tag` (the fingerprint's type), with a
/// checksum to be filled in by [`seal`] once the payload follows.
pub(crate) fn write_header<Tag>(out: &mut Vec<u8>, version: u32) {
    write_header_as::<Tag>(out, FORMAT_VERSION, version, 0);
}

/// Writes the envelope's head; `tags` (the mixed epochs of a tagged value's tags, else
/// 0) is folded into the type's fingerprint.
fn write_header_as<Tag>(out: &mut Vec<u8>, format: u8, version: u32, tags: u64) {
    out.extend_from_slice(MAGIC);
    out.push(format);
    out.extend_from_slice(&(fingerprint::<Tag>() ^ tags).to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Fills in the checksum of the envelope at the start of `bytes`; returns it.
pub(crate) fn seal(bytes: &mut [u8]) -> u32 {
    let sum = checksum(&bytes[HEADER_LEN..]);
    bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    sum
}

/// The checksum recorded in the envelope at the start of `bytes`, if it has one.
pub(crate) fn recorded_checksum(bytes: &[u8]) -> Option<u32> {
    let field = bytes.get(HEADER_LEN - 4..HEADER_LEN)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// Appends `value`'s bincode encoding (no envelope) to `out`.
pub(crate) fn encode_item<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
    bincode::serde::encode_into_std_write(value, out, standard())?;
    Ok(())
}

/// The bytes after an envelope written for `Tag` and `version`; `None` (logged at
/// debug) when the envelope does not match.
pub(crate) fn checked_payload<Tag>(bytes: &[u8], version: u32) -> Option<&[u8]> {
    logged::<Tag, &[u8]>(payload::<Tag>(bytes, version))
}

/// Decodes one item at the start of `payload`, and how many bytes it took.
pub(crate) fn decode_item<T: DeserializeOwned>(payload: &[u8]) -> Option<(T, usize)> {
    logged::<T, (T, usize)>(decode_bounded::<T>(payload).map_err(|_| "item does not decode"))
}

fn logged<Tag, V>(decoded: Result<V, &'static str>) -> Option<V> {
    decoded
        .inspect_err(|reason| {
            tracing::debug!(
                reason,
                ty = type_name::<Tag>(),
                "cached bytes unreadable; treated as a miss"
            );
            if *reason == ANOTHER_TYPE {
                another_type::<Tag>();
            }
        })
        .ok()
}

/// Why bytes written for another type (not an absent value's mark) are a miss.
const ANOTHER_TYPE: &str = "written for another type";

/// Says once per type, at WARN, that a value of another type was found where a `Tag`
/// is read: a miss, then overwritten. Once is a deploy that changed the type; over and
/// over, two writers that disagree on one key (two functions under `shared_key` that
/// return different types, or two versions deployed side by side), which evict each
/// other: silent otherwise.
#[cold]
fn another_type<Tag>() {
    static WARNED: once_cell::sync::Lazy<
        std::sync::Mutex<std::collections::HashSet<&'static str>>,
    > = once_cell::sync::Lazy::new(Default::default);
    let ty = type_name::<Tag>();
    let first = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(ty);
    if first {
        tracing::warn!(
            ty,
            "a value of another type was found where a `{ty}` is read: read as a miss and \
             overwritten (said once per type). If it repeats, two writers disagree on the \
             type at one key: two functions under `shared_key` returning different types \
             (give them different templates), or two versions of a function deployed side \
             by side (bump its `version`)"
        );
    }
}

fn payload<Tag>(bytes: &[u8], version: u32) -> Result<&[u8], &'static str> {
    payload_as::<Tag>(bytes, FORMAT_VERSION, version, 0)
}

fn payload_as<Tag>(
    bytes: &[u8],
    expected: u8,
    version: u32,
    tags: u64,
) -> Result<&[u8], &'static str> {
    let (header, payload) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or("shorter than the envelope")?;
    let (magic, rest) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err("not written by cache-memoize");
    }
    let (format, rest) = rest.split_at(1);
    if format[0] != expected {
        return Err("another envelope format version or codec");
    }
    let (type_print, rest) = rest.split_at(8);
    if type_print != (fingerprint::<Tag>() ^ tags).to_le_bytes() {
        return Err(if is_absent_mark(bytes) {
            "an absent value's mark"
        } else if tags != 0 {
            // Most likely a tag invalidated since (a miss by design), else another type.
            "computed before one of its tags was invalidated, or for another type"
        } else {
            ANOTHER_TYPE
        });
    }
    let (user_version, recorded) = rest.split_at(4);
    if user_version != version.to_le_bytes() {
        return Err("written for another version");
    }
    if recorded != checksum(payload).to_le_bytes() {
        return Err("the checksum does not match: corrupted");
    }
    Ok(payload)
}

type Decoded<T> = Result<(T, usize), bincode::error::DecodeError>;

/// bincode's limit counts decoded widths, not encoded bytes: a one-byte varint claims
/// its integer's full width, at most 16 bytes (`u128`). So a valid payload claims at
/// most 16 times its length, and a length prefix claiming more (bytes written for a
/// changed type) fails before it is allocated.
const CLAIMS_PER_BYTE: usize = 16;

/// Decodes with bincode's byte limit set to the next power of two at or above
/// [`CLAIMS_PER_BYTE`] times the payload's length: every valid payload decodes, and no
/// string or buffer allocation exceeds about 32 times the input's size.
fn decode_bounded<T: DeserializeOwned>(payload: &[u8]) -> Decoded<T> {
    fn with_limit<T: DeserializeOwned, const N: usize>(payload: &[u8]) -> Decoded<T> {
        let config: Configuration<_, _, Limit<N>> = standard().with_limit::<N>();
        bincode::serde::decode_from_slice(payload, config)
    }
    macro_rules! by_exponent {
        ($exponent:expr; $($e:literal)*) => {
            match $exponent {
                $($e => with_limit::<T, { 1usize << $e }>(payload),)*
                _ => Err(bincode::error::DecodeError::LimitExceeded),
            }
        };
    }
    let claimable = payload.len().saturating_mul(CLAIMS_PER_BYTE).max(64);
    let exponent = claimable.next_power_of_two().trailing_zeros();
    by_exponent!(exponent; 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
        29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44)
}

/// A fingerprint of the Rust type: its name, size and alignment, hashed eight bytes at
/// a time (it runs on every read, so it must be cheap; it need not be cryptographic).
/// A renamed type or a changed layout reads as a miss; a change that keeps both is
/// caught by bincode failing to decode, or by the user's `version`.
fn fingerprint<T>() -> u64 {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |hash: u64, word: u64| (hash.rotate_left(23) ^ word).wrapping_mul(MULTIPLIER);
    let name = type_name::<T>().as_bytes();
    let mut words = name.chunks_exact(8);
    let mut hash = words.by_ref().fold(name.len() as u64, |hash, word| {
        mix(
            hash,
            u64::from_le_bytes(word.try_into().unwrap_or_default()),
        )
    });
    let mut tail = [0_u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    hash = mix(hash, u64::from_le_bytes(tail));
    hash = mix(hash, size_of::<T>() as u64);
    mix(hash, align_of::<T>() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Report {
        title: String,
        rows: Vec<u32>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ReportV2 {
        title: String,
        rows: Vec<u32>,
        total: u64,
    }

    fn report() -> Report {
        Report {
            title: "daily".into(),
            rows: vec![1, 2, 3],
        }
    }

    fn encoded() -> Vec<u8> {
        encode(&report(), 0).unwrap_or_default()
    }

    #[test]
    fn a_value_round_trips() {
        assert_eq!(decode::<Report>(&encoded(), 0), Some(report()));
    }

    #[test]
    fn another_type_reads_as_a_miss() {
        assert_eq!(decode::<ReportV2>(&encoded(), 0), None);
        assert_eq!(decode::<String>(&encoded(), 0), None);
    }

    #[test]
    fn fingerprints_tell_types_apart() {
        let prints = [
            fingerprint::<Report>(),
            fingerprint::<ReportV2>(),
            fingerprint::<String>(),
            fingerprint::<Vec<u8>>(),
            fingerprint::<Vec<u16>>(),
            fingerprint::<u8>(),
            fingerprint::<i8>(),
            fingerprint::<(u8, u8)>(),
        ];
        for (i, a) in prints.iter().enumerate() {
            for b in &prints[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(fingerprint::<Report>(), fingerprint::<Report>());
    }

    #[test]
    fn another_user_version_reads_as_a_miss() {
        assert_eq!(decode::<Report>(&encoded(), 1), None);
    }

    #[test]
    fn every_truncation_reads_as_a_miss() {
        let bytes = encoded();
        for len in 0..bytes.len() {
            assert_eq!(
                decode::<Report>(&bytes[..len], 0),
                None,
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn a_flipped_payload_byte_that_still_decodes_reads_as_a_miss() {
        let mut bytes = encode(&7_u8, 0).unwrap_or_default();
        let last = bytes.len() - 1;
        bytes[last] = 8; // still a valid u8
        assert_eq!(decode::<u8>(&bytes, 0), None);
    }

    #[test]
    fn trailing_bytes_read_as_a_miss() {
        let mut bytes = encoded();
        bytes.push(0);
        seal(&mut bytes);
        assert_eq!(decode::<Report>(&bytes, 0), None);
    }

    #[test]
    fn foreign_bytes_read_as_a_miss() {
        assert_eq!(
            decode::<Report>(b"hello, world; definitely not ours", 0),
            None
        );
        assert_eq!(decode::<Report>(&[0xff; 4096], 0), None);
    }

    #[test]
    fn a_huge_length_prefix_fails_without_allocating_it() {
        let mut bytes = encode(&String::from("x"), 0).unwrap_or_default();
        bytes.truncate(HEADER_LEN);
        // bincode varint: 0xfd announces a u64 length; claim 2^60 bytes.
        bytes.push(0xfd);
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        seal(&mut bytes);
        assert_eq!(decode::<String>(&bytes, 0), None);
    }

    #[test]
    fn every_size_round_trips_across_the_limit_boundaries() {
        for n in 0..2100 {
            let report = Report {
                title: "report of 100 bytes".into(),
                rows: Vec::new(),
            };
            let text = (report.title.clone(), "x".repeat(n));
            let bytes = encode(&text, 0).unwrap_or_default();
            assert_eq!(
                decode::<(String, String)>(&bytes, 0),
                Some(text),
                "string of {n}"
            );
        }
    }

    #[test]
    fn integer_heavy_values_round_trip() {
        let small: Vec<u64> = (0..5000).map(|i| i % 200).collect();
        let wide: Vec<u128> = (0..5000).map(|i| i % 200).collect();
        let flags: Vec<Option<bool>> = (0..5000)
            .map(|i| (i % 3 == 0).then_some(i % 2 == 0))
            .collect();
        assert_eq!(
            decode::<Vec<u64>>(&encode(&small, 0).unwrap_or_default(), 0),
            Some(small)
        );
        assert_eq!(
            decode::<Vec<u128>>(&encode(&wide, 0).unwrap_or_default(), 0),
            Some(wide)
        );
        assert_eq!(
            decode::<Vec<Option<bool>>>(&encode(&flags, 0).unwrap_or_default(), 0),
            Some(flags)
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "t")]
    enum Tagged {
        A { n: u32 },
        B { s: String, o: Option<u8> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sparse {
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        n: u32,
    }

    #[test]
    fn messagepack_reads_back_what_bincode_cannot() {
        let tagged = vec![
            Tagged::A { n: 1 },
            Tagged::B {
                s: "x".into(),
                o: None,
            },
        ];
        let sparse = Sparse { note: None, n: 3 };
        assert!(round_trips(Codec::Bincode, &tagged).is_err());
        assert!(round_trips(Codec::Bincode, &sparse).is_err());
        {
            let codec = Codec::MessagePack;
            let bytes = encode_with(codec, &tagged, 1, 9, Stamp::FOREVER).unwrap_or_default();
            assert_eq!(
                decode_with::<Vec<Tagged>>(codec, &bytes, 1),
                Some((tagged, Stamp::FOREVER))
            );
            let bytes = encode_with(codec, &sparse, 1, 9, Stamp::FOREVER).unwrap_or_default();
            assert_eq!(
                decode_with::<Sparse>(codec, &bytes, 1),
                Some((sparse, Stamp::FOREVER))
            );
        }
        assert!(round_trips(Codec::Bincode, &report()).is_ok());
    }

    #[test]
    fn the_stamp_travels_with_the_value_under_the_checksum() {
        let stamp = Stamp {
            fresh_until_ms: 1_700_000_000_000,
            compute_ms: 250,
        };
        let bytes = encode_with(Codec::Bincode, &report(), 3, 7, stamp).unwrap_or_default();
        assert_eq!(
            decode_with::<Report>(Codec::Bincode, &bytes, 3),
            Some((report(), stamp))
        );
        // A stamp altered to look fresher is caught by the checksum.
        let mut forged = bytes.clone();
        forged[FENCE_AT + FENCE_LEN + 7] ^= 0x01;
        assert_eq!(decode_with::<Report>(Codec::Bincode, &forged, 3), None);
        // Unstamped (iterator) bytes of the same type read as a miss, and back.
        let plain = encode(&report(), 3).unwrap_or_default();
        assert_eq!(decode_with::<Report>(Codec::Bincode, &plain, 3), None);
        assert_eq!(decode::<Report>(&bytes, 3), None);
    }

    #[test]
    fn the_fencing_token_is_read_at_its_place_without_decoding() {
        for codec in [Codec::Bincode, Codec::MessagePack] {
            let fence = 1_765_000_000_123_456;
            let bytes = encode_with(codec, &report(), 3, fence, Stamp::FOREVER).unwrap_or_default();
            assert_eq!(written_fence(&bytes), fence);
            assert_eq!(bytes[FENCE_AT..FENCE_AT + FENCE_LEN], fence.to_le_bytes());
            let absent = encode_absent(codec, 3, fence + 1, Stamp::FOREVER).unwrap_or_default();
            assert_eq!(written_fence(&absent), fence + 1);
            assert!(
                is_absent_mark(&absent),
                "an absent value's mark is told apart"
            );
            assert!(!is_absent_mark(&bytes), "a value is no absent mark");
        }
        assert!(!is_absent_mark(b"foreign bytes, not an envelope"));
        // Bytes with no place in the order: none, an iterator's, foreign, truncated.
        assert_eq!(written_fence(b""), 0);
        assert_eq!(written_fence(&encoded()), 0);
        assert_eq!(written_fence(b"cmz\x06 too short"), 0);
        assert_eq!(written_fence(&[0xff; 64]), 0);
    }

    #[test]
    fn bytes_of_one_codec_read_as_a_miss_under_the_other() {
        let bincode =
            encode_with(Codec::Bincode, &report(), 0, 0, Stamp::FOREVER).unwrap_or_default();
        let msgpack =
            encode_with(Codec::MessagePack, &report(), 0, 0, Stamp::FOREVER).unwrap_or_default();
        assert_eq!(decode_with::<Report>(Codec::MessagePack, &bincode, 0), None);
        assert_eq!(decode_with::<Report>(Codec::Bincode, &msgpack, 0), None);
        assert_eq!(
            decode_with::<Report>(Codec::MessagePack, &msgpack, 0),
            Some((report(), Stamp::FOREVER))
        );
    }

    #[test]
    fn messagepack_truncations_and_trailing_bytes_read_as_a_miss() {
        let bytes =
            encode_with(Codec::MessagePack, &report(), 0, 0, Stamp::FOREVER).unwrap_or_default();
        for len in 0..bytes.len() {
            assert_eq!(
                decode_with::<Report>(Codec::MessagePack, &bytes[..len], 0),
                None
            );
        }
        let mut longer = bytes.clone();
        longer.push(0xc0);
        seal(&mut longer);
        assert_eq!(decode_with::<Report>(Codec::MessagePack, &longer, 0), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let valid = encoded();
        for _ in 0..2000 {
            let mut bytes = valid.clone();
            let at = rng.usize(..bytes.len());
            bytes[at] = rng.u8(..);
            let _ = decode::<Report>(&bytes, 0);
            let noise: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
            let _ = decode::<Report>(&noise, 0);
        }
    }
}

#[cfg(test)]
#[path = "codec_against_old.rs"]
mod against_old;
