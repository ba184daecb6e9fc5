//! Large values: a memoized value whose encoding exceeds
//! [`MemoizeOptions::large_values`](crate::MemoizeOptions::large_values) (1 MiB by
//! default) is stored as chunks, then a manifest under the value's own key, so that no
//! single command carries more than one chunk (a 100 MB `GET` holds Redis's one thread
//! for tens of milliseconds, for every other client).
//!
//! ```text
//! key                      manifest: the value's envelope, fencing token and stamp, then
//!                          slot | compression | generation | length | chunk count | CRC per chunk
//! {key}:large:<slot>:<i>:<n> chunk i of n: generation | zstd frame of CHUNK_BYTES of the value
//! ```
//!
//! - **One order of writes.** The manifest is the value as far as every rule goes: it is
//!   stored by the same fenced store-and-release under the key's lock (its token and
//!   stamp sit where a value's do), invalidated by the same delete, judged fresh or
//!   stale by the same stamp, delivered to waiters by the same release message. The
//!   chunks are written first, so a manifest never names chunks not yet written.
//! - **Two slots per key.** A write uses the slot the committed manifest does not, so
//!   a reader of the committed value never finds its chunks rewritten by the next
//!   write. A chunk's name also carries its write's chunk count (so an in-process store
//!   can refuse a value larger than it from the first chunk): a key holds at most two
//!   slots' chunks for each chunk count its value has had, each living its value's TTL
//!   plus [`CHUNK_GRACE`]. A chunk carries its write's generation, and the manifest each chunk's
//!   CRC: a reader that meets another write's chunk (two writes since it read the
//!   manifest, a writer whose lock expired) reads the value as unreadable, which the
//!   sequence treats as any unreadable value (taken under the lock and recomputed),
//!   never as a value.
//! - Chunks live a minute longer than their manifest (written before it, with its TTL
//!   plus [`CHUNK_GRACE`]).
//!
//! This module is sans-IO: [`Writing`] and [`Reading`] name the operations, the driver
//! sends them (blocking or awaited) and hands back the replies.

use std::time::Duration;

use crate::backend::{Op, Reply};
use crate::codec;
use crate::error::Error;
use crate::key::large_chunk_key;

/// How many bytes of the value one chunk carries (before compression).
pub(crate) const CHUNK_BYTES: usize = crate::key::LARGE_CHUNK_BYTES;

/// The compression of chunks, named in the manifest: zstd at level 1. Measured on
/// 100 MB of record-like text against LZ4 (`lz4_flex`): Redis held 0.31x of the value
/// against 0.63x (LZ4's 270 KB chunks land just over a 256 KiB allocator class), for
/// about the same read time (BENCHMARKS.md, "Large values").
const ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 1;

/// How much longer a chunk lives than its manifest.
pub(crate) const CHUNK_GRACE: Duration = Duration::from_secs(60);

/// The default threshold: values whose encoding is larger are stored in chunks.
pub(crate) const DEFAULT_LARGE_VALUES: usize = 1024 * 1024;

const GENERATION_LEN: usize = 8;

/// Where a manifest says its chunks are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    slot: u8,
    generation: u64,
    length: u64,
    checksums: Vec<u32>,
}

impl Manifest {
    /// The manifest in `bytes`, if they are one (checked against their checksum, and
    /// for a chunk count that covers the length it claims).
    fn read(bytes: &[u8]) -> Option<Self> {
        let body = codec::manifest_body(bytes)?;
        let (&slot, body) = body.split_first()?;
        let (&compression, body) = body.split_first()?;
        if compression != ZSTD {
            return None;
        }
        let (generation, body) = body.split_at_checked(8)?;
        let (length, body) = body.split_at_checked(8)?;
        let (count, body) = body.split_at_checked(4)?;
        let count = usize::try_from(u32::from_le_bytes(count.try_into().ok()?)).ok()?;
        let length = u64::from_le_bytes(length.try_into().ok()?);
        if body.len() != count.checked_mul(4)? || slot > 1 {
            return None;
        }
        let covered = u64::try_from(count.checked_mul(CHUNK_BYTES)?).ok()?;
        if length > covered || length + (CHUNK_BYTES as u64) <= covered {
            return None;
        }
        Some(Self {
            slot,
            generation: u64::from_le_bytes(generation.try_into().ok()?),
            length,
            checksums: body
                .chunks_exact(4)
                .map(|crc| u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]))
                .collect(),
        })
    }

    /// The manifest's bytes, headed by the value's envelope (`None` if `value` is not a
    /// memoized value).
    fn write(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut out = codec::manifest_head(value)?;
        out.push(self.slot);
        out.push(ZSTD);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.checksums.len()).ok()?.to_le_bytes());
        for crc in &self.checksums {
            out.extend_from_slice(&crc.to_le_bytes());
        }
        codec::seal(&mut out);
        Some(out)
    }
}

/// The store of a large value, step by step: read the committed manifest (to take the
/// other slot), write each chunk, then hand over the manifest for the store.
pub(crate) struct Writing<'v> {
    key: &'v str,
    value: &'v [u8],
    ttl: Duration,
    generation: u64,
    /// The slot, once the committed manifest was read.
    slot: Option<u8>,
    /// The next chunk to write, and each written chunk's checksum.
    next: usize,
    checksums: Vec<u32>,
    /// The chunk being written (kept until its reply).
    chunk: Vec<u8>,
    chunk_key: String,
    failed: bool,
    /// The backend's error that failed a step, for the store to report.
    error: Option<Error>,
}

impl<'v> Writing<'v> {
    /// The store of `value` at `key` for `ttl`, if `value` is larger than `threshold`
    /// (and a memoized value).
    pub(crate) fn of(
        key: &'v str,
        value: &'v [u8],
        ttl: Duration,
        threshold: usize,
    ) -> Option<Self> {
        if value.len() <= threshold || codec::manifest_head(value).is_none() {
            return None;
        }
        Some(Self {
            key,
            value,
            ttl,
            generation: fastrand::u64(..),
            slot: None,
            next: 0,
            checksums: Vec::new(),
            chunk: Vec::new(),
            chunk_key: String::new(),
            failed: false,
            error: None,
        })
    }

    /// The next operation to send; `None` when the chunks are written (or a step
    /// failed: see [`manifest`](Self::manifest)).
    pub(crate) fn next_op(&mut self) -> Option<Op<'_>> {
        if self.failed {
            return None;
        }
        let Some(slot) = self.slot else {
            // A `get_many`, which no near cache answers (a near copy may lag a commit
            // made elsewhere).
            return Some(Op::GetMany {
                keys: std::slice::from_ref(&self.key),
            });
        };
        let start = self.next * CHUNK_BYTES;
        let part = self
            .value
            .get(start..)?
            .get(..CHUNK_BYTES.min(self.value.len() - start))?;
        if part.is_empty() {
            return None;
        }
        self.chunk.clear();
        self.chunk.extend_from_slice(&self.generation.to_le_bytes());
        match zstd::bulk::compress(part, ZSTD_LEVEL) {
            Ok(frame) => self.chunk.extend_from_slice(&frame),
            Err(_) => {
                self.failed = true;
                return None;
            }
        }
        let count = self.value.len().div_ceil(CHUNK_BYTES);
        self.chunk_key = large_chunk_key(self.key, slot, self.next, count);
        Some(Op::Set {
            key: &self.chunk_key,
            value: &self.chunk,
            ttl: self.ttl.saturating_add(CHUNK_GRACE),
        })
    }

    /// The reply to the operation [`next_op`](Self::next_op) gave.
    pub(crate) fn answer(&mut self, reply: Result<Reply, Error>) {
        match self.slot {
            None => {
                // A failed read of the committed manifest: the store would fail too, or
                // write over chunks being read; give up.
                let read = reply.and_then(|r| r.into_values("get_many", self.key));
                let mut current = match read {
                    Ok(current) => current,
                    Err(err) => {
                        self.failed = true;
                        self.error = Some(err);
                        return;
                    }
                };
                let current = current.pop().flatten();
                let taken = current.as_deref().and_then(Manifest::read).map(|m| m.slot);
                self.slot = Some(match taken {
                    Some(0) => 1,
                    _ => 0,
                });
            }
            Some(_) => match reply {
                Ok(_) => {
                    self.checksums.push(crc32fast::hash(&self.chunk));
                    self.next += 1;
                }
                Err(err) => {
                    self.failed = true;
                    self.error = Some(err);
                }
            },
        }
    }

    /// The backend's error that failed a step, if one did (the store then failed:
    /// reported as a failed store is).
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The manifest to store in the value's place, once every chunk is written; `None`
    /// when a step failed (store nothing: release the lock).
    pub(crate) fn manifest(self) -> Option<Vec<u8>> {
        if self.failed {
            return None;
        }
        Manifest {
            slot: self.slot?,
            generation: self.generation,
            length: u64::try_from(self.value.len()).ok()?,
            checksums: self.checksums,
        }
        .write(self.value)
    }
}

/// The read of a large value from its manifest, chunk by chunk.
pub(crate) struct Reading {
    key: String,
    manifest: Manifest,
    next: usize,
    chunk_key: String,
    value: Vec<u8>,
    failed: bool,
}

impl Reading {
    /// The read of the value whose manifest `bytes` are (at `key`); `None` when they
    /// are not a manifest.
    pub(crate) fn of(key: &str, bytes: &[u8]) -> Option<Self> {
        let manifest = Manifest::read(bytes)?;
        Some(Self {
            key: key.to_owned(),
            manifest,
            next: 0,
            chunk_key: String::new(),
            // Reserved once the first chunk proved the manifest's: a forged length
            // alone allocates nothing.
            value: Vec::new(),
            failed: false,
        })
    }

    /// The next operation to send; `None` when every chunk is read or one failed.
    pub(crate) fn next_op(&mut self) -> Option<Op<'_>> {
        if self.failed || self.next >= self.manifest.checksums.len() {
            return None;
        }
        let count = self.manifest.checksums.len();
        self.chunk_key = large_chunk_key(&self.key, self.manifest.slot, self.next, count);
        Some(Op::Get {
            key: &self.chunk_key,
        })
    }

    /// The reply to the operation [`next_op`](Self::next_op) gave.
    pub(crate) fn answer(&mut self, reply: Result<Reply, Error>) {
        let chunk = reply.and_then(|r| r.into_value("get", &self.chunk_key));
        match chunk.ok().flatten().and_then(|chunk| self.opened(&chunk)) {
            Some(part) => {
                if self.next == 0 {
                    // The first chunk is this write's: reserve the whole value once
                    // (growing by doubling would hold up to twice it while copying).
                    let length = usize::try_from(self.manifest.length).unwrap_or(usize::MAX);
                    let _ = self.value.try_reserve_exact(length);
                }
                self.value.extend_from_slice(&part);
                self.next += 1;
            }
            None => self.failed = true,
        }
    }

    /// A chunk's part of the value, if it is this write's chunk `next`, whole.
    fn opened(&self, chunk: &[u8]) -> Option<Vec<u8>> {
        let expected = self.manifest.checksums.get(self.next)?;
        if crc32fast::hash(chunk) != *expected {
            return None;
        }
        let (generation, block) = chunk.split_at_checked(GENERATION_LEN)?;
        if generation != self.manifest.generation.to_le_bytes() {
            return None;
        }
        // Decompressed into at most the size this chunk must have: a frame claiming more
        // fails before anything larger is allocated.
        let start = self.next * CHUNK_BYTES;
        let wanted = usize::try_from(self.manifest.length)
            .ok()?
            .checked_sub(start)?
            .min(CHUNK_BYTES);
        let part = zstd::bulk::decompress(block, wanted).ok()?;
        (part.len() == wanted).then_some(part)
    }

    /// The value, when every chunk was read whole; `None` otherwise (the manifest then
    /// reads as an unreadable value).
    pub(crate) fn value(self) -> Option<Vec<u8>> {
        let whole = !self.failed
            && self.next == self.manifest.checksums.len()
            && u64::try_from(self.value.len()).ok() == Some(self.manifest.length);
        whole.then_some(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;
    use crate::backend::BackendCore;
    use crate::codec::{Codec, Stamp};

    fn is_manifest(bytes: &[u8]) -> bool {
        Manifest::read(bytes).is_some()
    }

    fn value(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        codec::encode_with(Codec::Bincode, &payload, 3, 77, Stamp::FOREVER).unwrap_or_default()
    }

    fn store(backend: &MemoryBackend, key: &str, value: &[u8]) -> Option<Vec<u8>> {
        let mut writing = Writing::of(key, value, Duration::from_secs(60), 1024)?;
        while let Some(op) = writing.next_op() {
            let reply = backend.execute(op);
            writing.answer(reply);
        }
        let manifest = writing.manifest()?;
        backend
            .execute(Op::Set {
                key,
                value: &manifest,
                ttl: Duration::from_secs(60),
            })
            .ok()?;
        Some(manifest)
    }

    fn read(backend: &MemoryBackend, key: &str, manifest: &[u8]) -> Option<Vec<u8>> {
        let mut reading = Reading::of(key, manifest)?;
        while let Some(op) = reading.next_op() {
            let reply = backend.execute(op);
            reading.answer(reply);
        }
        reading.value()
    }

    #[test]
    fn a_large_value_reads_back_whole_and_its_manifest_keeps_its_token_and_stamp() {
        let backend = MemoryBackend::new();
        let big = value(3 * CHUNK_BYTES + 17);
        let manifest = store(&backend, "k", &big);
        let manifest = manifest.unwrap_or_default();
        assert!(is_manifest(&manifest));
        assert_eq!(codec::written_fence(&manifest), 77);
        assert!(manifest.len() < 200);
        assert_eq!(read(&backend, "k", &manifest), Some(big));
    }

    #[test]
    fn a_small_value_or_foreign_bytes_are_stored_whole() {
        assert!(Writing::of("k", &value(10), Duration::from_secs(1), 1024).is_none());
        assert!(Writing::of("k", &[7; 4096], Duration::from_secs(1), 1024).is_none());
        assert!(Reading::of("k", &value(10)).is_none());
    }

    #[test]
    fn writes_alternate_slots_so_the_committed_chunks_are_never_rewritten() {
        let backend = MemoryBackend::new();
        let first = store(&backend, "k", &value(2 * CHUNK_BYTES)).unwrap_or_default();
        let second = store(&backend, "k", &value(2 * CHUNK_BYTES + 1)).unwrap_or_default();
        let (a, b) = (Manifest::read(&first), Manifest::read(&second));
        assert_eq!(a.map(|m| m.slot), Some(0));
        assert_eq!(b.map(|m| m.slot), Some(1));
        // The first write's chunks are still whole: a reader of it is not disturbed.
        assert_eq!(read(&backend, "k", &first), Some(value(2 * CHUNK_BYTES)));
        // A third write takes slot 0 again: the first manifest's reader now meets
        // another generation's chunks and reads nothing, never a mix.
        let _third = store(&backend, "k", &value(2 * CHUNK_BYTES + 2));
        assert_eq!(read(&backend, "k", &first), None);
    }

    #[test]
    fn a_missing_or_damaged_chunk_reads_as_nothing() {
        let backend = MemoryBackend::new();
        let big = value(2 * CHUNK_BYTES);
        let manifest = store(&backend, "k", &big).unwrap_or_default();
        let chunk = large_chunk_key("k", 0, 1, big.len().div_ceil(CHUNK_BYTES));
        let _ = backend.execute(Op::Set {
            key: &chunk,
            value: b"garbage",
            ttl: Duration::from_secs(60),
        });
        assert_eq!(read(&backend, "k", &manifest), None);
        let _ = backend.execute(Op::Delete { key: &chunk });
        assert_eq!(read(&backend, "k", &manifest), None);
    }

    #[test]
    fn a_forged_manifest_claiming_more_than_its_chunks_is_not_one() {
        let backend = MemoryBackend::new();
        let manifest = store(&backend, "k", &value(2 * CHUNK_BYTES)).unwrap_or_default();
        let Some(mut parsed) = Manifest::read(&manifest) else {
            panic!("the manifest does not read back");
        };
        parsed.length = u64::MAX / 2;
        let forged = parsed.write(&value(2 * CHUNK_BYTES)).unwrap_or_default();
        assert!(!is_manifest(&forged));
    }
}
