//! The reading side of memoized iterators: a stored sequence, window by window (sync),
//! or read and checked whole (async).

use std::collections::VecDeque;

use super::{Chunk, Compute, Context, Manifest};
use crate::codec;

/// Encoded bytes fetched per `get_many` on a hit.
const WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// A stored sequence, read window by window.
pub(super) struct Reader<'a, T> {
    pub(super) context: Context<T>,
    manifest: Manifest<T>,
    /// The next chunk to fetch.
    next_chunk: u32,
    /// Fetched chunks not yet decoded (`None`: missing).
    window: VecDeque<Option<Vec<u8>>>,
    /// The chunk being decoded, and the offset of its next item.
    current: Option<(Vec<u8>, usize)>,
    pub(super) yielded: u64,
    skip: u64,
    pub(super) compute: Option<Compute<'a, T>>,
}

impl<'a, T> Reader<'a, T> {
    pub(super) fn new(
        context: Context<T>,
        manifest: Manifest<T>,
        compute: Compute<'a, T>,
        skip: u64,
    ) -> Self {
        Self {
            context,
            manifest,
            next_chunk: 0,
            window: VecDeque::new(),
            current: None,
            yielded: 0,
            skip,
            compute: Some(compute),
        }
    }

    pub(super) fn prefetched(
        context: Context<T>,
        manifest: Manifest<T>,
        chunks: VecDeque<Vec<u8>>,
    ) -> Self {
        Self {
            next_chunk: manifest.chunks,
            window: chunks.into_iter().map(Some).collect(),
            current: None,
            yielded: 0,
            skip: 0,
            compute: None,
            context,
            manifest,
        }
    }

    /// The next item; `Err` when the stored sequence turns out broken.
    pub(super) fn next(&mut self) -> Result<Option<T>, &'static str> {
        loop {
            let item = self.next_stored()?;
            if item.is_some() && self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if item.is_some() {
                self.yielded += 1;
            }
            return Ok(item);
        }
    }

    pub(super) fn next_stored(&mut self) -> Result<Option<T>, &'static str> {
        loop {
            if let Some((chunk, offset)) = &mut self.current {
                if *offset < chunk.len() {
                    let (item, read) = (self.context.items.decode)(&chunk[*offset..])
                        .ok_or("an item does not decode")?;
                    *offset += read;
                    return Ok(Some(item));
                }
                self.current = None;
            }
            let Some(chunk) = self.next_chunk()? else {
                let read = self.yielded + self.skip;
                return if read == self.manifest.items {
                    Ok(None)
                } else {
                    Err("fewer items than the manifest says")
                };
            };
            let payload = codec::checked_payload::<Chunk<T>>(&chunk, self.context.opts.version)
                .ok_or("a chunk is unreadable")?;
            self.current = Some(if self.manifest.compressed {
                (decompress(payload).ok_or("a chunk does not decompress")?, 0)
            } else {
                (chunk, codec::HEADER_LEN)
            });
        }
    }

    /// The next chunk's bytes, fetching the next window when needed.
    pub(super) fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, &'static str> {
        if self.window.is_empty() && self.next_chunk < self.manifest.chunks {
            self.fetch_window()?;
        }
        match self.window.pop_front() {
            Some(Some(chunk)) => Ok(Some(chunk)),
            Some(None) => Err("a chunk is missing"),
            None => Ok(None),
        }
    }

    pub(super) fn fetch_window(&mut self) -> Result<(), &'static str> {
        let per_window = (WINDOW_BYTES / self.context.opts.chunk_size.max(1)).max(1) as u32;
        let end = self
            .manifest
            .chunks
            .min(self.next_chunk.saturating_add(per_window));
        let names: Vec<String> = (self.next_chunk..end)
            .map(|i| self.context.key.chunk_key(i as usize))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let chunks = self
            .context
            .backend()
            .get_many(&names)
            .map_err(|_| "the backend failed while reading")?;
        self.window.extend(chunks);
        self.next_chunk = end;
        Ok(())
    }
}

/// Reads every chunk of `manifest` and checks that all its items decode.
pub(super) async fn read_all_async<T>(
    context: &Context<T>,
    manifest: &Manifest<T>,
) -> Option<VecDeque<Vec<u8>>> {
    let names: Vec<String> = (0..manifest.chunks as usize)
        .map(|i| context.key.chunk_key(i))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let chunks = context.backend().get_many_async(&names).await.ok()?;
    let chunks: VecDeque<Vec<u8>> = chunks.into_iter().collect::<Option<_>>()?;
    let mut items = 0_u64;
    for (chunk, expected) in chunks.iter().zip(&manifest.checksums) {
        if codec::recorded_checksum(chunk) != Some(*expected) {
            return None;
        }
        let payload = codec::checked_payload::<Chunk<T>>(chunk, context.opts.version)?;
        let decompressed = if manifest.compressed {
            Some(decompress(payload)?)
        } else {
            None
        };
        let mut payload = decompressed.as_deref().unwrap_or(payload);
        while !payload.is_empty() {
            let (_, read) = (context.items.decode)(payload)?;
            payload = &payload[read..];
            items += 1;
        }
    }
    (items == manifest.items).then_some(chunks)
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
