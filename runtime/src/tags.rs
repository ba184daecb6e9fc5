//! Tags: invalidate a group of values in one write, whatever their number.
//!
//! A tag is an **epoch** stored at its own key (`_tag_:` + the tag, under the key
//! prefix): a random token, created by the first reader that finds none. A tagged
//! value records the epochs its tags had when its computation began, mixed into one
//! word that is folded into its envelope's type fingerprint (`codec::encode_tagged`);
//! a reader mixes the epochs it reads with the value, and a value recorded under other
//! epochs reads as **another value: a miss** (never a stale hit), recomputed under the
//! lock and overwritten as any miss is.
//!
//! - **Invalidating a tag is one `DEL`** of its epoch ([`invalidate_tag`]): every value
//!   that recorded it becomes a miss, for 1 or 100,000 of them. The next reader creates
//!   a new epoch.
//! - **Read with the value**: a tagged read is one `get_tagged` of the value and its
//!   tags' epochs (one `MGET` on a single server, as `get_many`); a read that finds an
//!   epoch missing creates it (`add`, which only one creator wins) and reads the epochs
//!   again. A near cache answers it from its copies of the value *and* of every epoch,
//!   kept under the same tracking (a moved epoch's copy is dropped by its invalidation),
//!   with no command sent; without all of them here it goes to Redis.
//! - **The order of writes**: a value is judged by the epochs read *with* it, after
//!   the call began; a computation begun before an invalidation returned recorded the
//!   old epoch, so whatever it stores reads as a miss to every call that begins after.
//!   An epoch that expired or was evicted is missing, never equal to a recorded one:
//!   its values are misses too (an epoch lives [`TAG_LIFE`] past its creation, or the
//!   value's own life if longer; a tag's values then recompute once).

use std::time::Duration;

use crate::backend::{CacheBackend, Op, Reply, is_unsupported};
use crate::error::Error;
use crate::key::make_cache_key;
use crate::registry;

/// How long a tag's epoch lives past its creation, at least: values that recorded it
/// read as misses once it is gone (then a new one is created).
pub const TAG_LIFE: Duration = Duration::from_secs(24 * 60 * 60);

/// The prefix of a tag's epoch key (after the key prefix).
pub(crate) const TAG_PREFIX: &str = "_tag_:";

/// The key of `tag`'s epoch: `_tag_:`, then the tag made a key as a value's key is
/// (under the key prefix, escaped, digested when long), as a lock's key is `_lock_:`
/// and its value's key.
pub(crate) fn tag_key(tag: &str) -> String {
    format!("{TAG_PREFIX}{}", make_cache_key(tag))
}

/// Invalidates every value tagged `tag` (in the registered backend): one delete of
/// the tag's epoch, whatever the number of values. A call that begins after it returns
/// computes its value anew; one that began before it may still return the old value,
/// as with [`invalidate`](crate::invalidate).
///
/// ```
/// use cache_memoize::{MemoizeOptions, invalidate_tag, memoize};
///
/// let opts = MemoizeOptions::new().tags(["user:7"]);
/// let first: u32 = memoize("profile:7", &opts, || 1);
/// let cached: u32 = memoize("profile:7", &opts, || 2);
/// assert_eq!((first, cached), (1, 1));
/// invalidate_tag("user:7").unwrap();
/// let again: u32 = memoize("profile:7", &opts, || 3);
/// assert_eq!(again, 3);
/// ```
///
/// # Errors
///
/// The backend's error when the delete failed (the values stay as they were).
pub fn invalidate_tag(tag: &str) -> Result<(), Error> {
    invalidate_tag_in(&*registry::backend(), tag)
}

/// [`invalidate_tag`] in the backend `backend` (the one a function's options name).
///
/// # Errors
///
/// The backend's error when the delete failed.
pub fn invalidate_tag_in(backend: &dyn CacheBackend, tag: &str) -> Result<(), Error> {
    let key = tag_key(tag);
    backend.execute(Op::Delete { key: &key }).map(drop)
}

/// [`invalidate_tag`] for async code: the same delete, awaited.
///
/// # Errors
///
/// The backend's error when the delete failed.
pub async fn invalidate_tag_async(tag: &str) -> Result<(), Error> {
    let backend = registry::backend();
    invalidate_tag_in_async(&*backend, tag).await
}

/// [`invalidate_tag_in`] for async code.
///
/// # Errors
///
/// The backend's error when the delete failed.
pub async fn invalidate_tag_in_async(backend: &dyn CacheBackend, tag: &str) -> Result<(), Error> {
    let key = tag_key(tag);
    backend
        .execute_async(Op::Delete { key: &key })
        .await
        .map(drop)
}

/// The read of a tagged value, or of its tags alone, as operations (sans I/O, like
/// `large::Reading`): `get_tagged` of the value (when `with_value`) and its epochs; for
/// each missing epoch an `add` of a new one; then, if any was missing, the epochs again.
/// (`get_many` instead, from a backend that answers `get_tagged` unsupported.)
pub(crate) struct EpochsRead<'k> {
    /// The value's key (when read) then the epochs' keys.
    keys: Vec<&'k str>,
    with_value: bool,
    /// Whether the backend does not know `get_tagged`: its reads are `get_many`.
    plain: bool,
    /// Whether the first read was answered from the near tier's copies.
    near: bool,
    life: Duration,
    phase: Phase,
    value: Option<Vec<u8>>,
    epochs: Vec<Option<Vec<u8>>>,
    /// The epoch created for the missing tag being added.
    created: String,
    failed: Option<Error>,
}

#[derive(Clone, Copy)]
enum Phase {
    /// The first read: the value and the epochs.
    First,
    /// Adding the missing epoch at this index (of the epochs).
    Adding(usize),
    /// The epochs read again after adding.
    Again,
    Done,
}

impl<'k> EpochsRead<'k> {
    /// Reads the epochs of `tags` (their keys), after the value at `value_key` when one
    /// is given; epochs are created to live `life` (at least [`TAG_LIFE`]).
    pub(crate) fn new(value_key: Option<&'k str>, tags: &'k [String], life: Duration) -> Self {
        let mut keys = Vec::with_capacity(tags.len() + 1);
        keys.extend(value_key);
        keys.extend(tags.iter().map(String::as_str));
        Self {
            keys,
            with_value: value_key.is_some(),
            plain: false,
            near: false,
            life: life.max(TAG_LIFE),
            phase: Phase::First,
            value: None,
            epochs: Vec::new(),
            created: String::new(),
            failed: None,
        }
    }

    /// Whether the value is read too.
    pub(crate) fn with_value(&self) -> bool {
        self.with_value
    }

    /// Whether the read was answered from the near tier's copies (no command sent).
    pub(crate) fn near(&self) -> bool {
        self.near
    }

    fn tag_keys(&self) -> &[&'k str] {
        &self.keys[usize::from(self.with_value)..]
    }

    /// The next operation to send; `None` when done.
    pub(crate) fn next_op(&mut self) -> Option<Op<'_>> {
        match self.phase {
            Phase::First => Some(self.read(&self.keys, self.with_value)),
            Phase::Adding(index) => {
                self.created = uuid::Uuid::new_v4().to_string();
                Some(Op::Add {
                    key: self.tag_keys()[index],
                    value: self.created.as_bytes(),
                    ttl: self.life,
                })
            }
            Phase::Again => Some(self.read(self.tag_keys(), false)),
            Phase::Done => None,
        }
    }

    /// The read of `keys` (the value's first when `with_value`).
    fn read<'s>(&self, keys: &'s [&'s str], with_value: bool) -> Op<'s> {
        if self.plain {
            Op::GetMany { keys }
        } else {
            Op::GetTagged { keys, with_value }
        }
    }

    /// The reply to the operation [`next_op`](Self::next_op) gave.
    pub(crate) fn answer(&mut self, reply: Result<Reply, Error>) {
        if let (Phase::First | Phase::Again, false, Err(err)) = (self.phase, self.plain, &reply) {
            if is_unsupported(err) {
                // Asked again, as `get_many`.
                self.plain = true;
                return;
            }
        }
        match self.phase {
            Phase::First => {
                self.near = matches!(reply, Ok(Reply::NearValues(_)));
                let Some(mut values) = self.values(reply) else {
                    return;
                };
                if self.with_value {
                    self.value = values.remove(0);
                }
                self.epochs = values;
                self.phase = self.next_missing(0).map_or(Phase::Done, Phase::Adding);
            }
            Phase::Adding(index) => {
                // Added, or another reader added one first: read again either way.
                if let Err(err) = reply {
                    self.fail(err);
                    return;
                }
                self.phase = self
                    .next_missing(index + 1)
                    .map_or(Phase::Again, Phase::Adding);
            }
            Phase::Again => {
                if let Some(values) = self.values(reply) {
                    self.epochs = values;
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn values(&mut self, reply: Result<Reply, Error>) -> Option<Vec<Option<Vec<u8>>>> {
        let key = self.keys.first().copied().unwrap_or_default();
        match reply.and_then(|reply| reply.into_values("get_many", key)) {
            Ok(values) => Some(values),
            Err(err) => {
                self.fail(err);
                None
            }
        }
    }

    fn fail(&mut self, err: Error) {
        self.failed = Some(err);
        self.phase = Phase::Done;
    }

    fn next_missing(&self, from: usize) -> Option<usize> {
        (from..self.epochs.len()).find(|&index| self.epochs[index].is_none())
    }

    /// What was read: the value (when asked for) and the epochs' mix; `None` for the
    /// mix when an epoch is still missing (deleted again meanwhile: no value is this
    /// call's, and what it computes is not stored). The backend's error if it failed.
    pub(crate) fn finish(self) -> Result<(Option<Vec<u8>>, Option<u64>), Error> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        Ok((self.value, mix(&self.epochs)))
    }
}

/// The epochs, mixed into one nonzero word (`None` when one is missing). Epochs are
/// random tokens: a simple mix suffices for two sets of them to differ.
pub(crate) fn mix(epochs: &[Option<Vec<u8>>]) -> Option<u64> {
    mix_of(epochs.iter().map(Option::as_deref))
}

/// [`mix`] of epochs given by reference, in order (a batch element's, picked out of
/// its batch's one read).
pub(crate) fn mix_of<'e>(epochs: impl ExactSizeIterator<Item = Option<&'e [u8]>>) -> Option<u64> {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ epochs.len() as u64;
    for epoch in epochs {
        let epoch = epoch?;
        for chunk in epoch.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = (hash.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(MULTIPLIER);
        }
        hash = (hash ^ epoch.len() as u64).wrapping_mul(MULTIPLIER);
    }
    Some(hash | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_tells_epochs_apart_and_is_never_untagged() {
        let one = mix(&[Some(b"a".to_vec()), Some(b"b".to_vec())]);
        let other = mix(&[Some(b"a".to_vec()), Some(b"c".to_vec())]);
        let swapped = mix(&[Some(b"b".to_vec()), Some(b"a".to_vec())]);
        assert!(one.is_some() && one != other && one != swapped);
        assert_ne!(mix(&[]), Some(0));
        assert_eq!(mix(&[Some(b"a".to_vec()), None]), None);
    }
}
