//! Encryption at rest: [`Encryption`] (the public settings) and [`Seal`] (what the
//! backend's one choke point, `ops.rs`, applies to every operation once).
//!
//! - **Key names.** Every key the backend sends (values, locks, refresh marks,
//!   iterator chunks and manifests) and every release channel derived from a lock key
//!   has the content of its hash tag `{…}` replaced by a keyed hash (HMAC-SHA256, 128
//!   bits as 32 hex digits); what is outside the braces (`_lock_:`, `:chunk:…`) is a
//!   fixed spelling and stays, so a value, its lock and its chunks keep one cluster
//!   slot. A key with no hash tag is hashed whole.
//! - **Values.** Bytes written by `Set` and `StoreAndRelease` are sealed with
//!   AES-256-GCM under a key of their own, derived from the first value key and 12
//!   random bytes (HMAC-SHA256), with 12 more random bytes as the GCM nonce: 192 random
//!   bits per value, so no bound on the writes under one value key (a single key with
//!   random 96-bit nonces would be good for 2^32 writes only). All of it from `ring`
//!   (the `encryption` feature), whose AES-GCM is assembly using the CPU's AES and
//!   carry-less multiplication instructions: 1.6 µs to open 10 KB here against 7.4 µs
//!   with the `aes-gcm` crate (`BENCHMARKS.md`, "Encryption at rest"), of which the
//!   derivation is 0.4 µs. The stored bytes are the same as `aes-gcm` wrote. What the
//!   Lua scripts read inside Redis stays in clear (the magic, the format byte and a
//!   memoized value's fencing token: no argument and no value data); the type's
//!   fingerprint, the user version, the checksum, the stamp and the payload are
//!   encrypted (the checksum too, so opening restores the envelope as written, and
//!   the codec checks what it always checks, without a second pass over the value).
//!   The clear part and the
//!   hashed key name are the associated data: bytes moved to another key, or a clear
//!   part edited, do not authenticate.
//! - Anything read that does not open (tampered, truncated, another key's bytes, a
//!   retired or unknown key id, a plaintext envelope) reads as unreadable bytes: a miss,
//!   recomputed and overwritten, never an error. Bytes that are not an envelope at all
//!   (a lock's token, written by `Add` and compared inside Redis) are passed as they
//!   are.
//!
//! ```text
//! sealed:    "cmz" | format | "sea2" | key id | 0 × 11 | [fence, 8 LE] | ciphertext | salt (12) | nonce (12) | tag (16)
//! plaintext: rest | type print (8) | version (4) | CRC-32   (format 0: the whole bytes)
//! opened:    "cmz" | format | type print | version | CRC-32 | [fence] | rest
//! ```
//! The rest is sealed where the envelope has it, so opening moves 16 bytes back into
//! the head and nothing else. Format 0 seals bytes that are not an envelope (written by hand through
//! [`Backend::set`](crate::Backend::set)): the whole of them is the plaintext.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::codec::{FENCE_AT, FENCED_FORMATS, HEADER_LEN};

/// The keys of encryption at rest for a [`RedisBackend`](crate::RedisBackend), given
/// to [`RedisBuilder::encryption`](crate::RedisBuilder::encryption).
///
/// Two kinds of secret: the **name key** hashes key names (so `SCAN` and `MONITOR`
/// show no argument) and must stay the same for as long as the cached values should
/// be found (a new one is a cold cache); the **value keys** seal values, each with a
/// one-byte id written in clear beside its ciphertext (AES-256-GCM under a key derived
/// per value, see the README's "Encryption at rest"). The first value key listed
/// seals every new write; every listed key opens what it sealed. Rotation: list the
/// new key first and the old one after it (old values stay readable: no extra miss),
/// then, once the old values have expired or been rewritten, remove the old key
/// (values still sealed under it read as a miss, never as an error).
///
/// ```
/// use cache_memoize::Encryption;
///
/// let names = [7u8; 32]; // from your secret store, not from source code
/// let (old, new) = ([1u8; 32], [2u8; 32]);
/// let rotating = Encryption::new(names).key(2, new).key(1, old);
/// assert_eq!(rotating.key_ids(), [2, 1]);
/// ```
///
/// Only the Redis backend has it. A [`MemoryBackend`](crate::MemoryBackend) keeps
/// values in the memory of the process that holds the keys, so sealing them would
/// hide nothing from anyone who could read them, and would cost every hit a
/// decryption: it is not offered there.
#[derive(Clone)]
#[must_use]
pub struct Encryption {
    names: [u8; 32],
    keys: Vec<(u8, [u8; 32])>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Encryption")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

/// The secrets are overwritten with zeros when the settings are dropped (each clone
/// its own copy), so they do not linger in freed memory. The keys `ring` prepared from
/// them are `ring`'s, which does not zero them.
impl Drop for Encryption {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Encryption {
    /// Settings whose key names are hashed with the 32-byte secret `name_key`; add the
    /// value keys with [`key`](Self::key) (at least one, or connecting fails).
    pub fn new(name_key: [u8; 32]) -> Self {
        Self {
            names: name_key,
            keys: Vec::new(),
        }
    }

    /// Adds a 32-byte value key with the id `key_id`. The first one added seals new
    /// writes; the others only open values sealed under them. Ids must differ.
    pub fn key(mut self, key_id: u8, key: [u8; 32]) -> Self {
        self.keys.push((key_id, key));
        self
    }

    /// The value keys' ids, the sealing one first.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// Overwrites every secret with zeros (what dropping the settings does).
    fn wipe(&mut self) {
        use zeroize::Zeroize as _;
        self.names.zeroize();
        for (_, key) in &mut self.keys {
            key.zeroize();
        }
    }
}

/// What marks sealed bytes, right after the magic and the format byte.
/// (Its second form, "sea2", seals the checksum too; bytes of the first, "seal", read
/// as a plaintext envelope would: a miss.)
const SEALED: &[u8; 4] = b"sea2";
/// The mark of the first sealed form.
const EARLIER: &[u8; 4] = b"seal";
/// The format byte of sealed bytes that were not an envelope.
const RAW: u8 = 0;
/// The clear head of sealed bytes: magic, format, mark, key id, padding to the
/// envelope's length (so a fencing token sits where the scripts read it).
const HEAD_LEN: usize = HEADER_LEN;
const KEY_ID_AT: usize = 8;
/// The random bytes per value: a salt (its key's derivation) and the GCM nonce.
const NONCE_LEN: usize = SALT_LEN + GCM_NONCE_LEN;
const SALT_LEN: usize = 12;
const GCM_NONCE_LEN: usize = 12;
/// What a value's key is derived from, beside its salt (domain separation).
const DERIVE: &[u8] = b"cache-memoize seal v1";
const TAG_LEN: usize = 16;
const FENCE_LEN: usize = 8;
/// The envelope's fields that move into the ciphertext: type print, user version and
/// checksum.
const PRINT_AT: usize = 4;
const PRINT_LEN: usize = 16;
const MAGIC: &[u8; 3] = b"cmz";
/// How many hex digits of the HMAC name a key (128 bits).
const NAME_HEX: usize = 32;

/// The backend's encryption at rest: the name hash and the value keys, ready.
pub(crate) struct Seal {
    /// This seal's own entries in each thread's [`Recent`].
    id: u64,
    names: hmac::Key,
    /// The value keys, the sealing one first, each ready to derive values' keys.
    keys: Vec<(u8, hmac::Key)>,
    random: SystemRandom,
}

/// The cipher of one value: AES-256-GCM under HMAC-SHA256(`key`, [`DERIVE`] | `salt`).
fn cipher_of(key: &hmac::Key, salt: &[u8]) -> Option<LessSafeKey> {
    let mut derive = hmac::Context::with_key(key);
    derive.update(DERIVE);
    derive.update(salt);
    // A SHA-256 output is always an AES-256 key.
    let key = UnboundKey::new(&AES_256_GCM, derive.sign().as_ref()).ok()?;
    Some(LessSafeKey::new(key))
}

/// The next seal's id (see [`Seal::id`]).
static SEALS: AtomicU64 = AtomicU64::new(1);

/// What each thread keeps of its recent work, so that reading a hot key again hashes
/// no name and derives no key (together 0.6 µs of a 10 KB hit's 8.5 µs, `BENCHMARKS.md`,
/// "Encryption at rest"): the last names hashed and the last value keys derived, each in
/// a slot of its own (a newer entry replaces the one in its slot). Bounded per thread:
/// [`RECENT_NAMES`] names of keys up to [`RECENT_KEY_LEN`] bytes, [`RECENT_CIPHERS`]
/// keys. An entry names its seal, so two backends' seals never share one.
struct Recent {
    names: [Option<Named>; RECENT_NAMES],
    /// ((seal, key id, salt), the key derived from them).
    ciphers: [Option<(Derived, LessSafeKey)>; RECENT_CIPHERS],
}

/// What a value's key is derived from: the seal, the value key's id and the salt.
type Derived = (u64, u8, [u8; SALT_LEN]);

/// A key's stored name under a seal: (seal, key, name).
type Named = (u64, Box<str>, Box<str>);

const RECENT_NAMES: usize = 32;
const RECENT_KEY_LEN: usize = 256;
const RECENT_CIPHERS: usize = 8;

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            names: [const { None }; RECENT_NAMES],
            ciphers: [const { None }; RECENT_CIPHERS],
        })
    };
}

impl Recent {
    /// The stored name of `key` under seal `seal`: this thread's last one, or `hash`'s.
    fn name(seal: u64, key: &str, hash: impl FnOnce() -> String) -> String {
        if key.len() > RECENT_KEY_LEN {
            return hash();
        }
        // Reduced before the conversion, so that a 32-bit target uses every slot.
        let hashed = foldhash::fast::FixedState::default().hash_one(key);
        let slot = usize::try_from(hashed % RECENT_NAMES as u64).unwrap_or_default();
        let kept = RECENT.try_with(|recent| match &recent.borrow().names[slot] {
            Some((of, kept, name)) if *of == seal && **kept == *key => Some(String::from(&**name)),
            _ => None,
        });
        if let Ok(Some(name)) = kept {
            return name;
        }
        let name = hash();
        // Gone only while the thread ends: then nothing is kept.
        let _ = RECENT.try_with(|recent| {
            recent.borrow_mut().names[slot] = Some((seal, key.into(), name.as_str().into()));
        });
        name
    }

    /// `open` run with the key `derived` names (derived from `value_key` unless this
    /// thread kept it); `None` if it cannot be derived.
    fn with_cipher<R>(
        derived: Derived,
        value_key: &hmac::Key,
        open: impl FnOnce(&LessSafeKey) -> R,
    ) -> Option<R> {
        let slot = usize::from(derived.2[0]) % RECENT_CIPHERS;
        // Taken out while in use, so no borrow is held across `open`.
        let kept = RECENT
            .try_with(|recent| recent.borrow_mut().ciphers[slot].take())
            .ok()
            .flatten()
            .filter(|(of, _)| *of == derived);
        let cipher = match kept {
            Some((_, cipher)) => cipher,
            None => cipher_of(value_key, &derived.2)?,
        };
        let opened = open(&cipher);
        let _ = RECENT.try_with(|recent| {
            recent.borrow_mut().ciphers[slot] = Some((derived, cipher));
        });
        Some(opened)
    }
}

/// What opening read bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// The plaintext bytes, as written before sealing.
    Clear(Vec<u8>),
    /// Bytes that are not sealed and not an envelope (a lock's token): as they are.
    AsIs(Vec<u8>),
    /// Bytes that do not open: read as a miss.
    Unreadable,
}

impl Seal {
    /// The seal of `settings`, or why they can never work.
    pub(crate) fn new(settings: &Encryption) -> Result<Self, String> {
        if settings.keys.is_empty() {
            return Err("encryption needs at least one value key (`Encryption::key`)".into());
        }
        for (i, (id, _)) in settings.keys.iter().enumerate() {
            if settings.keys[..i].iter().any(|(other, _)| other == id) {
                return Err(format!("encryption key id {id} is listed twice"));
            }
        }
        let keyed = |key: &[u8; 32]| hmac::Key::new(hmac::HMAC_SHA256, key);
        Ok(Self {
            id: SEALS.fetch_add(1, Ordering::Relaxed),
            names: keyed(&settings.names),
            keys: settings
                .keys
                .iter()
                .map(|(id, key)| (*id, keyed(key)))
                .collect(),
            random: SystemRandom::new(),
        })
    }

    /// The stored name of `key`: its hash tag's content (or, with none, the whole key)
    /// replaced by its keyed hash.
    pub(crate) fn name(&self, key: &str) -> String {
        Recent::name(self.id, key, || self.hashed_name(key))
    }

    /// [`name`](Self::name), computed.
    fn hashed_name(&self, key: &str) -> String {
        let tag = key.find('{').and_then(|open| {
            let close = open + 1 + key[open + 1..].find('}')?;
            Some((open, close))
        });
        match tag {
            Some((open, close)) => {
                let mut out = String::with_capacity(key.len() - (close - open) + NAME_HEX + 1);
                out.push_str(&key[..=open]);
                self.hash_into(&key[open + 1..close], &mut out);
                out.push_str(&key[close..]);
                out
            }
            None => {
                let mut out = String::with_capacity(NAME_HEX);
                self.hash_into(key, &mut out);
                out
            }
        }
    }

    fn hash_into(&self, text: &str, out: &mut String) {
        let mac = hmac::sign(&self.names, text.as_bytes());
        for byte in &mac.as_ref()[..NAME_HEX / 2] {
            // Writing to a String cannot fail.
            let _ = write!(out, "{byte:02x}");
        }
    }

    /// `value`, to be stored at the (hashed) key `key`, sealed under the first key.
    pub(crate) fn seal(&self, key: &str, value: &[u8]) -> Vec<u8> {
        let Some((id, value_key)) = self.keys.first() else {
            return value.to_vec();
        };
        let (format, fenced) = envelope(value);
        let mut out = Vec::with_capacity(value.len() + HEAD_LEN + FENCE_LEN + NONCE_LEN + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(format);
        out.extend_from_slice(SEALED);
        out.push(*id);
        out.resize(HEAD_LEN, 0);
        let rest_at = if format == RAW {
            0
        } else if fenced {
            out.extend_from_slice(&value[FENCE_AT..FENCE_AT + FENCE_LEN]);
            FENCE_AT + FENCE_LEN
        } else {
            HEADER_LEN
        };
        let clear = out.len();
        let mut nonce = [0; NONCE_LEN];
        // Without random bytes (the OS's source failing), stored unreadable rather than
        // in clear or under a repeated nonce: a miss on reading.
        if self.random.fill(&mut nonce).is_err() {
            return out;
        }
        let (salt, gcm_nonce) = nonce.split_at(SALT_LEN);
        let (Some(cipher), Ok(gcm_nonce)) = (
            cipher_of(value_key, salt),
            Nonce::try_assume_unique_for_key(gcm_nonce),
        ) else {
            return out;
        };
        // The rest first, where the envelope has it, then the print: opening then
        // moves 16 bytes back, not the value.
        out.extend_from_slice(&value[rest_at..]);
        if format != RAW {
            out.extend_from_slice(&value[PRINT_AT..PRINT_AT + PRINT_LEN]);
        }
        let aad = associated(&out[..clear], key);
        let sealed =
            cipher.seal_in_place_separate_tag(gcm_nonce, Aad::from(&aad), &mut out[clear..]);
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(&nonce);
                out.extend_from_slice(tag.as_ref());
            }
            // Only for plaintexts over 64 GiB: stored unreadable rather than in clear.
            Err(_) => out.truncate(clear),
        }
        out
    }

    /// Bytes read at the (hashed) key `key`, opened.
    pub(crate) fn open(&self, key: &str, mut stored: Vec<u8>) -> Opened {
        if !stored.starts_with(MAGIC) {
            return Opened::AsIs(stored);
        }
        let mark = stored.get(PRINT_AT..PRINT_AT + SEALED.len());
        if mark != Some(SEALED) {
            // The earlier sealed form, or a plaintext envelope (a value must be sealed),
            // is not accepted; bytes that only start like one (a lock's token beginning
            // "cmz") are passed as is.
            return match envelope(&stored) {
                (RAW, _) if mark != Some(EARLIER) => Opened::AsIs(stored),
                _ => Opened::Unreadable,
            };
        }
        let format = stored[MAGIC.len()];
        let fenced = FENCED_FORMATS.contains(&format);
        let clear = HEAD_LEN + if fenced { FENCE_LEN } else { 0 };
        if stored.len() < clear + NONCE_LEN + TAG_LEN
            || (format != RAW && stored.len() < clear + NONCE_LEN + PRINT_LEN + TAG_LEN)
        {
            return Opened::Unreadable;
        }
        let Some((_, value_key)) = self.keys.iter().find(|(id, _)| *id == stored[KEY_ID_AT]) else {
            return Opened::Unreadable;
        };
        let key_id = stored[KEY_ID_AT];
        let aad = associated(&stored[..clear], key);
        let tag_at = stored.len() - TAG_LEN;
        let nonce_at = tag_at - NONCE_LEN;
        let (head, tail) = stored.split_at_mut(nonce_at);
        let (nonce, tag) = tail.split_at(NONCE_LEN);
        let (salt, nonce) = nonce.split_at(SALT_LEN);
        let (Ok(salt), Ok(nonce), Ok(tag)) = (
            <[u8; SALT_LEN]>::try_from(salt),
            Nonce::try_assume_unique_for_key(nonce),
            Tag::try_from(tag),
        ) else {
            return Opened::Unreadable;
        };
        let ciphertext = &mut head[clear..];
        let opened = Recent::with_cipher((self.id, key_id, salt), value_key, |cipher| {
            cipher
                .open_in_place_separate_tag(nonce, Aad::from(&aad), tag, ciphertext, 0..)
                .is_ok()
        });
        if opened != Some(true) {
            return Opened::Unreadable;
        }
        stored.truncate(nonce_at);
        if format == RAW {
            stored.drain(..clear);
            return Opened::Clear(stored);
        }
        // Back to the envelope as written: the rest is where it belongs (after the
        // fence, kept in clear where it is); the print, version and checksum go back
        // to their place.
        let print_at = nonce_at - PRINT_LEN;
        stored.copy_within(print_at..nonce_at, PRINT_AT);
        stored.truncate(print_at);
        Opened::Clear(stored)
    }

    /// `stored` as the backend answers it: opened, a lock's token as it is, and
    /// unreadable bytes as an empty value (which every reader takes for a miss and
    /// overwrites, as it does damaged bytes).
    pub(crate) fn read(&self, key: &str, stored: Vec<u8>) -> Vec<u8> {
        match self.open(key, stored) {
            Opened::Clear(bytes) | Opened::AsIs(bytes) => bytes,
            Opened::Unreadable => {
                tracing::debug!(key, "sealed bytes do not open; treated as a miss");
                Vec::new()
            }
        }
    }
}

/// The format byte `value` is sealed under, and whether it carries a fencing token in
/// clear: an envelope (its checksum checked: it is sealed with the value) keeps its format;
/// anything else, bytes that only start like one included, is [`RAW`] and opens as
/// written.
fn envelope(value: &[u8]) -> (u8, bool) {
    if value.len() < HEADER_LEN
        || !value.starts_with(MAGIC)
        || value[MAGIC.len()] == RAW
        || value[HEADER_LEN - 4..HEADER_LEN] != crc32fast::hash(&value[HEADER_LEN..]).to_le_bytes()
    {
        return (RAW, false);
    }
    let format = value[MAGIC.len()];
    if FENCED_FORMATS.contains(&format) && value.len() < FENCE_AT + FENCE_LEN {
        // A fenced format too short for its fence: not a value this library wrote;
        // sealed whole, so that it opens as written (opening reads the format byte).
        return (RAW, false);
    }
    (format, FENCED_FORMATS.contains(&format))
}

/// The associated data: the clear head (fixed length per format) and the key name.
fn associated(clear: &[u8], key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(clear.len() + key.len());
    aad.extend_from_slice(clear);
    aad.extend_from_slice(key.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Stamp, decode_with, encode_with, written_fence};

    fn seal_of(settings: &Encryption) -> Seal {
        match Seal::new(settings) {
            Ok(seal) => seal,
            Err(err) => panic!("{err}"),
        }
    }

    fn one() -> Seal {
        seal_of(&Encryption::new([9; 32]).key(1, [1; 32]))
    }

    fn value() -> Vec<u8> {
        let stamp = Stamp {
            fresh_until_ms: 1_800_000_000_000,
            compute_ms: 12,
        };
        encode_with(Codec::Bincode, &String::from("secret value"), 3, 77, stamp).unwrap_or_default()
    }

    #[test]
    fn what_a_thread_keeps_opens_and_names_as_computed_and_never_across_seals() {
        let (seal, other) = (one(), seal_of(&Encryption::new([8; 32]).key(1, [2; 32])));
        for _ in 0..2 {
            assert_eq!(seal.name("{hot}"), seal.hashed_name("{hot}"));
            assert_eq!(other.name("{hot}"), other.hashed_name("{hot}"));
        }
        assert_ne!(seal.name("{hot}"), other.name("{hot}"));
        let sealed = seal.seal("{k}", &value());
        for _ in 0..2 {
            // The second opening uses the key the first derived.
            assert_eq!(seal.open("{k}", sealed.clone()), Opened::Clear(value()));
        }
        // A kept key still checks the tag, and another seal's key never opens it.
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(seal.open("{k}", tampered), Opened::Unreadable);
        assert_eq!(other.open("{k}", sealed), Opened::Unreadable);
    }

    #[test]
    fn dropped_settings_leave_no_secret_behind() {
        let mut settings = Encryption::new([7; 32]).key(1, [1; 32]).key(2, [2; 32]);
        settings.wipe();
        assert_eq!(settings.names, [0; 32]);
        assert!(settings.keys.iter().all(|(_, key)| *key == [0; 32]));
        assert_eq!(settings.key_ids(), [1, 2], "the ids are no secret");
    }

    #[test]
    fn names_hash_the_tag_and_keep_what_is_outside() {
        let seal = one();
        let value = seal.name("{site:user:ann}");
        let lock = seal.name("_lock_:{site:user:ann}");
        let chunk = seal.name("{site:user:ann}:chunk:00000000000000ab:3");
        assert!(!value.contains("ann") && !lock.contains("ann") && !chunk.contains("ann"));
        assert_eq!(value.len(), NAME_HEX + 2);
        assert_eq!(lock, format!("_lock_:{value}"));
        assert_eq!(chunk, format!("{value}:chunk:00000000000000ab:3"));
        assert_eq!(seal.name("plain").len(), NAME_HEX);
        assert_ne!(seal.name("plain"), seal.name("plain2"));
        let other = seal_of(&Encryption::new([8; 32]).key(1, [1; 32]));
        assert_ne!(other.name("{a}"), seal.name("{a}"));
    }

    #[test]
    fn values_round_trip_with_the_fence_in_clear_and_nothing_else() {
        let seal = one();
        let plain = value();
        let sealed = seal.seal("{k}", &plain);
        assert_eq!(written_fence(&sealed), 77, "the scripts read the fence");
        assert_eq!(sealed.len(), plain.len() + 56, "the size the README gives");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            seal.open("{k}", sealed.clone()),
            Opened::Clear(plain.clone())
        );
        assert_eq!(
            decode_with::<String>(Codec::Bincode, &seal.read("{k}", sealed), 3).map(|(v, _)| v),
            Some("secret value".to_owned())
        );
    }

    #[test]
    fn raw_bytes_and_iterator_envelopes_round_trip() {
        let seal = one();
        for plain in [b"mark".to_vec(), Vec::new(), {
            let mut chunk = Vec::new();
            crate::codec::write_header::<u8>(&mut chunk, 0);
            chunk.extend_from_slice(b"chunk items");
            crate::codec::seal(&mut chunk);
            chunk
        }] {
            let sealed = seal.seal("{k}:chunk:1:0", &plain);
            assert_eq!(seal.open("{k}:chunk:1:0", sealed), Opened::Clear(plain));
        }
    }

    #[test]
    fn tampered_truncated_moved_foreign_and_plain_bytes_do_not_open() {
        let seal = one();
        let sealed = seal.seal("{k}", &value());
        for at in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[at] ^= 0x10;
            assert_ne!(
                seal.open("{k}", bad),
                Opened::Clear(value()),
                "byte {at} flipped"
            );
        }
        for len in 0..sealed.len() {
            assert!(!matches!(
                seal.open("{k}", sealed[..len].to_vec()),
                Opened::Clear(_)
            ));
        }
        assert_eq!(seal.open("{other}", sealed.clone()), Opened::Unreadable);
        let foreign = seal_of(&Encryption::new([9; 32]).key(1, [2; 32]));
        assert_eq!(foreign.open("{k}", sealed.clone()), Opened::Unreadable);
        assert_eq!(seal.open("{k}", value()), Opened::Unreadable);
        assert_eq!(
            seal.open("{k}", b"token".to_vec()),
            Opened::AsIs(b"token".to_vec())
        );
    }

    #[test]
    fn rotation_opens_old_keys_seals_with_the_first_and_drops_removed_ones() {
        let old = one();
        let sealed_old = old.seal("{k}", &value());
        let rotated = seal_of(&Encryption::new([9; 32]).key(2, [2; 32]).key(1, [1; 32]));
        assert_eq!(
            rotated.open("{k}", sealed_old.clone()),
            Opened::Clear(value())
        );
        let sealed_new = rotated.seal("{k}", &value());
        assert_eq!(sealed_new[KEY_ID_AT], 2);
        assert_eq!(old.open("{k}", sealed_new), Opened::Unreadable);
        let retired = seal_of(&Encryption::new([9; 32]).key(2, [2; 32]));
        assert_eq!(retired.open("{k}", sealed_old), Opened::Unreadable);
        assert_eq!(
            rotated.name("{k}"),
            retired.name("{k}"),
            "names survive rotation"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(Seal::new(&Encryption::new([0; 32])).is_err());
        assert!(Seal::new(&Encryption::new([0; 32]).key(1, [1; 32]).key(1, [2; 32])).is_err());
    }
}

/// Damaged, short, foreign and earlier-layout bytes against the "sea2" layout, and the
/// per-thread caches under rotation and thread exit (from review 5).
#[cfg(test)]
mod attacked {
    use super::*;
    use crate::codec::{Codec, Stamp, encode_with};

    fn seal_of(settings: &Encryption) -> Seal {
        match Seal::new(settings) {
            Ok(seal) => seal,
            Err(err) => panic!("{err}"),
        }
    }

    fn fenced_value(payload: &str) -> Vec<u8> {
        let stamp = Stamp {
            fresh_until_ms: 1_800_000_000_000,
            compute_ms: 1,
        };
        encode_with(Codec::Bincode, &String::from(payload), 3, 77, stamp).unwrap_or_default()
    }

    /// A deterministic byte source (no rand dependency).
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    /// Every stored length from 0 to 120, every format byte, with the "sea2" mark, the
    /// old "seal" mark and none, every key id byte that matters: open never panics and
    /// never opens forged bytes.
    #[test]
    fn short_and_forged_bytes_of_every_length_and_format_never_panic_nor_open() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]).key(0, [3; 32]));
        for len in 0..=120usize {
            for format in [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255] {
                for mark in [&b"sea2"[..], b"seal", b"xxxx"] {
                    for key_id in [0u8, 1, 2] {
                        let mut stored = bytes(len as u64 * 31 + u64::from(format), len);
                        let head = [&b"cmz"[..], &[format], mark, &[key_id]].concat();
                        let n = head.len().min(len);
                        stored[..n].copy_from_slice(&head[..n]);
                        let opened = seal.open("{k}", stored.clone());
                        assert!(
                            !matches!(opened, Opened::Clear(_)),
                            "forged bytes opened: len {len} format {format} mark {mark:?}"
                        );
                        let _ = seal.read("{k}", stored);
                    }
                }
            }
        }
    }

    /// Real sealed values (raw, unfenced iterator chunk, fenced), truncated at every
    /// length and extended by up to 40 bytes: never a panic, never a wrong value.
    #[test]
    fn real_sealed_values_truncated_or_extended_never_panic_nor_open() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]));
        let mut chunk = Vec::new();
        crate::codec::write_header::<u8>(&mut chunk, 0);
        chunk.extend_from_slice(b"chunk items");
        crate::codec::seal(&mut chunk);
        for plain in [b"raw".to_vec(), Vec::new(), chunk, fenced_value("v")] {
            let sealed = seal.seal("{k}", &plain);
            assert_eq!(
                seal.open("{k}", sealed.clone()),
                Opened::Clear(plain.clone())
            );
            for len in 0..sealed.len() {
                assert!(!matches!(
                    seal.open("{k}", sealed[..len].to_vec()),
                    Opened::Clear(_)
                ));
            }
            for extra in 1..40 {
                let mut longer = sealed.clone();
                longer.extend(bytes(extra, extra as usize));
                assert!(!matches!(seal.open("{k}", longer), Opened::Clear(_)));
            }
        }
    }

    /// FINDING 1: bytes written by hand through `Backend::set` that are a valid
    /// envelope of a fenced format (checksum right) but shorter than the fence (less
    /// than 8 bytes after the header) are sealed unfenced (`envelope` checks the length)
    /// but opened as fenced (`open` checks only the format): they never round-trip and
    /// read as a miss, where the same bytes round-trip without encryption. The module
    /// doc says "anything else ... opens as written".
    #[test]
    fn a_short_envelope_of_a_fenced_format_round_trips() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]));
        for format in FENCED_FORMATS {
            for rest in 0..FENCE_LEN {
                let mut plain = b"cmz".to_vec();
                plain.push(format);
                plain.resize(HEADER_LEN, 7);
                plain.extend(std::iter::repeat_n(5u8, rest));
                let crc = crc32fast::hash(&plain[HEADER_LEN..]).to_le_bytes();
                plain[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc);
                let sealed = seal.seal("{k}", &plain);
                assert_eq!(
                    seal.open("{k}", sealed),
                    Opened::Clear(plain),
                    "format {format}, {rest} bytes after the header"
                );
            }
        }
    }

    /// Held: hand-written envelopes of every unfenced format byte, with 0 to 40 bytes
    /// after the header, and fenced ones from 8 bytes, round-trip.
    #[test]
    fn hand_written_envelopes_round_trip() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]));
        for format in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 200, 255] {
            let from = if FENCED_FORMATS.contains(&format) {
                FENCE_LEN
            } else {
                0
            };
            for rest in from..40 {
                let mut plain = b"cmz".to_vec();
                plain.push(format);
                plain.resize(HEADER_LEN, 3);
                plain.extend(bytes(rest as u64, rest));
                let crc = crc32fast::hash(&plain[HEADER_LEN..]).to_le_bytes();
                plain[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc);
                let sealed = seal.seal("{k}", &plain);
                assert_eq!(
                    seal.open("{k}", sealed),
                    Opened::Clear(plain),
                    "{format} {rest}"
                );
            }
        }
    }

    /// Values sealed by the previous layout ("seal": the print in the ciphertext's head,
    /// the nonce after the clear head) read as a miss, never a panic or an error.
    #[test]
    fn the_previous_layout_reads_as_a_miss() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]));
        for plain in [fenced_value("old"), b"raw".to_vec()] {
            let mut old = seal.seal("{k}", &plain);
            old[PRINT_AT..PRINT_AT + 4].copy_from_slice(b"seal");
            assert_eq!(seal.open("{k}", old.clone()), Opened::Unreadable);
            assert!(seal.read("{k}", old).is_empty());
        }
    }

    /// The per-thread caches under rotation, other key ids, equal salts and many seals.
    #[test]
    fn cached_ciphers_never_serve_another_seal_key_id_or_salt() {
        let names = [9; 32];
        let a = seal_of(&Encryption::new(names).key(1, [1; 32]).key(2, [2; 32]));
        // Same ids, other secrets (a key id reused for a new secret after rotation).
        let b = seal_of(&Encryption::new(names).key(2, [7; 32]).key(1, [8; 32]));
        let plain = fenced_value("x");
        let sealed_a = a.seal("{k}", &plain);
        assert_eq!(
            a.open("{k}", sealed_a.clone()),
            Opened::Clear(plain.clone())
        );
        // b has key id 1 (another secret) and the same salt is in its cache slot now.
        assert_eq!(b.open("{k}", sealed_a.clone()), Opened::Unreadable);
        assert_eq!(
            a.open("{k}", sealed_a.clone()),
            Opened::Clear(plain.clone())
        );
        // The same salt under key id 2 of seal a: forged by relabelling the key id
        // (authenticated: the id is in the associated data).
        let mut relabelled = sealed_a.clone();
        relabelled[KEY_ID_AT] = 2;
        assert_eq!(a.open("{k}", relabelled), Opened::Unreadable);
        // Many seals made and dropped (rotation in a loop): a fresh one never finds
        // an entry of a dropped one, even for the same key and salt.
        for i in 100..200u8 {
            let other = seal_of(&Encryption::new([i; 32]).key(1, [i; 32]));
            assert_ne!(other.name("{k}"), a.name("{k}"));
            assert_eq!(other.open("{k}", sealed_a.clone()), Opened::Unreadable);
            assert_eq!(other.name("{k}"), other.hashed_name("{k}"));
        }
        assert_eq!(a.open("{k}", sealed_a), Opened::Clear(plain));
    }

    /// Names of keys over the kept length are hashed each time and right; names of
    /// every length up to 1000 bytes (multi-byte characters at the cut included).
    #[test]
    fn long_and_multibyte_keys_name_as_computed() {
        let seal = seal_of(&Encryption::new([9; 32]).key(1, [1; 32]));
        for len in [0usize, 1, 255, 256, 257, 1000] {
            for key in [
                "a".repeat(len),
                format!("{{{}}}", "é".repeat(len / 2)),
                "{".repeat(len),
                "}{".repeat(len / 2),
            ] {
                for _ in 0..2 {
                    assert_eq!(seal.name(&key), seal.hashed_name(&key), "{len}");
                }
            }
        }
    }

    /// Used from a thread-local's destructor (a pool's connection dropped at thread
    /// exit), after the thread's cache is gone: no panic, same answers.
    #[test]
    fn used_while_the_thread_ends() {
        struct OnExit(std::sync::Arc<Seal>, Vec<u8>, Vec<u8>);
        impl Drop for OnExit {
            fn drop(&mut self) {
                assert_eq!(self.0.name("{k}"), self.0.hashed_name("{k}"));
                assert_eq!(
                    self.0.open("{k}", self.1.clone()),
                    Opened::Clear(self.2.clone())
                );
            }
        }
        thread_local! {
            static EXIT: RefCell<Option<OnExit>> = const { RefCell::new(None) };
        }
        let seal = std::sync::Arc::new(seal_of(&Encryption::new([9; 32]).key(1, [1; 32])));
        let plain = fenced_value("bye");
        let sealed = seal.seal("{k}", &plain);
        let joined = std::thread::spawn(move || {
            // Registered before RECENT is first used, so dropped after it (reverse order
            // of registration on most platforms), and before it in the other order.
            EXIT.with(|exit| {
                *exit.borrow_mut() = Some(OnExit(seal.clone(), sealed.clone(), plain.clone()));
            });
            assert_eq!(
                seal.open("{k}", sealed.clone()),
                Opened::Clear(plain.clone())
            );
            let _ = seal.name("{k}");
        })
        .join();
        assert!(
            joined.is_ok(),
            "a thread using the seal at its exit panicked"
        );
    }
}
