//! The reading side of memoized iterators: a stored sequence, window by window (sync),
//! or read and checked whole (async). Every chunk, on either path, is opened by
//! [`open_chunk`]: it must be the chunk the manifest sealed, in this envelope, and
//! decompress; anything else makes the whole entry a miss.

use std::collections::VecDeque;
use std::fmt;

use super::given::{Given, Resuming};
use super::{Chunk, Compute, Context, Manifest};
use crate::codec;

/// Encoded bytes fetched per `get_many` on a hit.
const WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// The most chunks fetched per `get_many`, whatever the chunk size: what a manifest
/// claims is never allocated for before the chunks are there.
pub(super) const WINDOW_CHUNKS: u32 = 256;

/// How many chunks one `get_many` fetches.
fn window_len<T>(context: &Context<T>) -> u32 {
    let fit = WINDOW_BYTES / context.opts.chunk_size.max(1);
    u32::try_from(fit)
        .unwrap_or(u32::MAX)
        .clamp(1, WINDOW_CHUNKS)
}

/// The keys of chunks `range` of the write `manifest` describes.
pub(super) fn chunk_names<T>(
    key: &crate::key::CacheKey,
    manifest: &Manifest<T>,
    range: std::ops::Range<u32>,
) -> Vec<String> {
    range
        .map(|index| key.chunk_key(manifest.generation, index as usize))
        .collect()
}

/// Why a stored sequence cannot be read; it is then recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// The manifest does not describe a sequence this reader could have written.
    Manifest,
    /// A chunk the manifest names is absent.
    MissingChunk,
    /// A chunk is not the one the manifest sealed (another write's, or altered).
    ForeignChunk,
    /// A chunk's envelope or compression is broken.
    CorruptChunk,
    /// An item does not decode.
    Item,
    /// The chunks hold another number of items than the manifest says.
    ItemCount,
    /// The backend failed while reading.
    Backend,
    /// The sequence is not the one whose items the caller already has (see
    /// [`given`](super::given)): it cannot be continued.
    Changed,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manifest => "the manifest is inconsistent",
            Self::MissingChunk => "a chunk is missing",
            Self::ForeignChunk => "a chunk is not the one the manifest sealed",
            Self::CorruptChunk => "a chunk is unreadable",
            Self::Item => "an item does not decode",
            Self::ItemCount => "the chunks hold another number of items than the manifest says",
            Self::Backend => "the backend failed while reading",
            Self::Changed => "the sequence changed while it was being read",
        })
    }
}

/// A chunk's items: the bytes, and where the first item starts.
pub(super) type Items = (Vec<u8>, usize);

/// Opens chunk `index` of `manifest`: checks it against the manifest's checksum and
/// the envelope, and decompresses it.
pub(super) fn open_chunk<T>(
    context: &Context<T>,
    manifest: &Manifest<T>,
    index: usize,
    chunk: Option<Vec<u8>>,
) -> Result<Items, Unreadable> {
    let chunk = chunk.ok_or(Unreadable::MissingChunk)?;
    let sealed = manifest.checksums.get(index).ok_or(Unreadable::Manifest)?;
    if codec::recorded_checksum(&chunk) != Some(*sealed) {
        return Err(Unreadable::ForeignChunk);
    }
    let payload = codec::checked_payload::<Chunk<T>>(&chunk, context.opts.version)
        .ok_or(Unreadable::CorruptChunk)?;
    if manifest.compressed {
        Ok((decompress(payload).ok_or(Unreadable::CorruptChunk)?, 0))
    } else {
        Ok((chunk, codec::HEADER_LEN))
    }
}

/// Checks what a manifest claims before anything is fetched for it.
pub(super) fn check_manifest<T>(manifest: &Manifest<T>) -> Result<(), Unreadable> {
    if manifest.checksums.len() == manifest.chunks as usize {
        Ok(())
    } else {
        Err(Unreadable::Manifest)
    }
}

/// A stored sequence, read window by window.
pub(super) struct Reader<'a, T> {
    pub(super) context: Context<T>,
    manifest: Manifest<T>,
    /// The next chunk to fetch.
    next_chunk: u32,
    /// Opened chunks not yet decoded.
    window: VecDeque<Items>,
    /// The chunk being decoded, and the offset of its next item.
    current: Option<Items>,
    /// Items read from the store so far (passed-over ones included).
    read: u64,
    /// What the caller has been given, from this read and any it resumes.
    pub(super) given: Given,
    /// Items the caller had before this read, being passed over.
    resuming: Option<Resuming>,
    /// The computation, kept to recompute from a broken read (none once every chunk
    /// was checked up front).
    pub(super) compute: Option<Compute<'a, T>>,
}

impl<'a, T> Reader<'a, T> {
    pub(super) fn new(
        context: Context<T>,
        manifest: Manifest<T>,
        compute: Compute<'a, T>,
        given: Given,
    ) -> Self {
        Self {
            context,
            manifest,
            next_chunk: 0,
            window: VecDeque::new(),
            current: None,
            read: 0,
            resuming: Resuming::behind(given.clone()),
            given,
            compute: Some(compute),
        }
    }

    /// A reader over chunks already fetched and checked by [`read_all_async`].
    pub(super) fn prefetched(
        context: Context<T>,
        manifest: Manifest<T>,
        chunks: VecDeque<Items>,
    ) -> Self {
        Self {
            next_chunk: manifest.chunks,
            window: chunks,
            current: None,
            read: 0,
            given: Given::default(),
            resuming: None,
            compute: None,
            context,
            manifest,
        }
    }

    /// The next item new to the caller; `Err` when the stored sequence turns out broken.
    pub(super) fn next(&mut self) -> Result<Option<T>, Unreadable> {
        loop {
            if let Some((items, offset)) = &mut self.current {
                if *offset < items.len() {
                    let (item, used) =
                        (self.context.items.decode)(&items[*offset..]).ok_or(Unreadable::Item)?;
                    let encoded = items.get(*offset..*offset + used).ok_or(Unreadable::Item)?;
                    *offset += used;
                    self.read += 1;
                    if let Some(resuming) = &mut self.resuming {
                        if resuming.pass(encoded).map_err(|_| Unreadable::Changed)? {
                            self.resuming = None;
                        }
                        continue;
                    }
                    self.given.push(encoded);
                    return Ok(Some(item));
                }
                self.current = None;
            }
            if self.window.is_empty() && self.next_chunk < self.manifest.chunks {
                self.fetch_window()?;
            }
            let Some(items) = self.window.pop_front() else {
                return if self.read != self.manifest.items {
                    Err(Unreadable::ItemCount)
                } else if self.resuming.is_some() {
                    // Fewer items than the caller already has.
                    Err(Unreadable::Changed)
                } else {
                    Ok(None)
                };
            };
            self.current = Some(items);
        }
    }

    fn fetch_window(&mut self) -> Result<(), Unreadable> {
        check_manifest(&self.manifest)?;
        let end = self
            .manifest
            .chunks
            .min(self.next_chunk.saturating_add(window_len(&self.context)));
        let names = chunk_names(&self.context.key, &self.manifest, self.next_chunk..end);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let chunks = self
            .context
            .backend()
            .get_many(&names)
            .map_err(|_| Unreadable::Backend)?;
        for (index, chunk) in (self.next_chunk as usize..).zip(chunks) {
            let items = open_chunk(&self.context, &self.manifest, index, chunk)?;
            self.window.push_back(items);
        }
        self.next_chunk = end;
        Ok(())
    }
}

/// Reads and opens every chunk of `manifest`, window by window (so a manifest claiming
/// more chunks than are stored costs one window, not an allocation per claimed
/// chunk), and checks that all its items decode.
pub(super) async fn read_all_async<T>(
    context: &Context<T>,
    manifest: &Manifest<T>,
) -> Result<VecDeque<Items>, Unreadable> {
    check_manifest(manifest)?;
    let backend = context.backend();
    let mut opened = VecDeque::new();
    let mut items = 0_u64;
    let mut start = 0_u32;
    while start < manifest.chunks {
        let end = manifest
            .chunks
            .min(start.saturating_add(window_len(context)));
        let names = chunk_names(&context.key, manifest, start..end);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let chunks = backend
            .get_many_async(&names)
            .await
            .map_err(|_| Unreadable::Backend)?;
        for (index, chunk) in (start as usize..).zip(chunks) {
            let (bytes, first) = open_chunk(context, manifest, index, chunk)?;
            let mut payload = &bytes[first..];
            while !payload.is_empty() {
                let (_, used) = (context.items.decode)(payload).ok_or(Unreadable::Item)?;
                payload = &payload[used..];
                items += 1;
            }
            opened.push_back((bytes, first));
        }
        start = end;
    }
    if items == manifest.items {
        Ok(opened)
    } else {
        Err(Unreadable::ItemCount)
    }
}

/// LZ4 expands at most 255 times: a size prefix claiming more is not ours.
const MAX_EXPANSION: usize = 255;

/// The items of an LZ4-compressed chunk payload (size-prefixed).
fn decompress(payload: &[u8]) -> Option<Vec<u8>> {
    let claimed = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    if claimed > payload.len().saturating_mul(MAX_EXPANSION) {
        return None;
    }
    lz4_flex::decompress_size_prepended(payload).ok()
}
