//! Memoized iterators (Djblets' `cache_memoize_iter`): streamed, chunked, committed
//! last.
//!
//! - On a miss, items reach the caller as the computation yields them. They are
//!   encoded into chunks of at most `chunk_size` bytes; each full chunk is stored as it
//!   fills and the lock's expiry is extended; the manifest (chunk and item counts) is
//!   written last, with the lock's release, so no reader ever sees a partial sequence.
//! - On a hit, the manifest, then the chunks in windows of one `get_many` each, decoded
//!   item by item: about one window of encoded bytes is held at a time.
//! - A missing or corrupt chunk makes the entry a miss: the sequence is recomputed
//!   (and overwritten), skipping the items the caller already has. A backend failure
//!   while storing stops the storing, not the items.
//! - Dropping the iterator early commits nothing, deletes the chunks written so far,
//!   and releases the lock.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::CacheBackend;
use crate::call::{Acquired, Call};
use crate::codec;
use crate::error::LockError;
use crate::lock::{LockGuard, new_token};
use crate::memoize::MemoizeOptions;
use crate::refresh::take_forced;

/// The default largest chunk: 1 MiB (Djblets' size).
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;

/// Whether iterator chunks are compressed by default; chosen from the measurements in
/// BENCHMARKS.md (`cargo run --release --example iter_memory`).
pub const DEFAULT_COMPRESS: bool = true;

/// Encoded bytes fetched per `get_many` on a hit.
const WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// What the main key holds, written last. Typed by `T` so that another item type
/// reads as a miss.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Manifest<T> {
    chunks: u32,
    items: u64,
    /// Each chunk's checksum, as its writer sealed it: chunks left by another writer
    /// (a lock that expired) read as a miss.
    checksums: Vec<u32>,
    /// Whether each chunk's items are LZ4-compressed.
    compressed: bool,
    #[serde(skip)]
    of: PhantomData<fn() -> T>,
}

/// The envelope type of a chunk of `T` items.
struct Chunk<T>(PhantomData<fn() -> T>);

type Compute<'a, T> = Box<dyn FnOnce() -> Box<dyn Iterator<Item = T> + 'a> + 'a>;

/// How items are encoded and decoded, captured where `T`'s serde bounds are known, so
/// that `MemoIter<T>` is an iterator for every `T` (a type that cannot be cached is
/// reported once, at the attribute's item type, not again at `MemoIter`).
struct ItemCodec<T> {
    encode: fn(&T, &mut Vec<u8>) -> Result<(), crate::error::BoxError>,
    decode: fn(&[u8]) -> Option<(T, usize)>,
}

impl<T> Clone for ItemCodec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ItemCodec<T> {}

impl<T: Serialize + DeserializeOwned> ItemCodec<T> {
    fn new() -> Self {
        Self {
            encode: codec::encode_item::<T>,
            decode: codec::decode_item::<T>,
        }
    }
}

/// The iterator returned by [`memoize_iter`]: items from the cache on a hit, from the
/// computation (stored as they pass) on a miss.
pub struct MemoIter<'a, T> {
    state: State<'a, T>,
}

enum State<'a, T> {
    Reading(Reader<'a, T>),
    Writing(Writer<'a, T>),
    Finished,
}

impl<T> std::fmt::Debug for MemoIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Reading(_) => "reading",
            State::Writing(_) => "writing",
            State::Finished => "finished",
        };
        f.debug_struct("MemoIter").field("state", &state).finish()
    }
}

/// What an iterator needs of its call after the call returned.
struct Context<T> {
    key: String,
    opts: MemoizeOptions,
    items: ItemCodec<T>,
}

impl<T> Clone for Context<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            opts: self.opts.clone(),
            items: self.items,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Context<T> {
    fn new(key: &str, opts: &MemoizeOptions) -> Self {
        Self {
            key: key.to_owned(),
            opts: opts.clone().backend(opts.backend_handle()),
            items: ItemCodec::new(),
        }
    }
}

impl<T> Context<T> {
    fn call(&self, forced: bool) -> Call<'_> {
        Call::new(&self.key, &self.opts, forced)
    }

    fn backend(&self) -> Arc<dyn CacheBackend> {
        self.opts.backend_handle()
    }
}

/// Returns the sequence memoized at `key`, computing it on a miss. Items reach the
/// caller as `compute`'s iterator yields them, and are stored as they pass.
///
/// ```
/// use cache_memoize::{MemoizeOptions, memoize_iter};
///
/// let opts = MemoizeOptions::new();
/// let squares: Vec<u64> = memoize_iter("squares:5", &opts, || (1..=5).map(|n| n * n)).collect();
/// assert_eq!(squares, [1, 4, 9, 16, 25]);
/// let again: Vec<u64> = memoize_iter("squares:5", &opts, || std::iter::empty()).collect();
/// assert_eq!(again, squares);
/// ```
pub fn memoize_iter<'a, T, I>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> I + 'a,
) -> MemoIter<'a, T>
where
    T: Serialize + DeserializeOwned + 'a,
    I: IntoIterator<Item = T>,
    I::IntoIter: 'a,
{
    let context = Context::new(key, opts);
    let forced = opts.force_overwrite || take_forced();
    let compute: Compute<'a, T> = Box::new(move || Box::new(compute().into_iter()));
    MemoIter {
        state: open(context, compute, forced, 0),
    }
}

/// The async form of [`memoize_iter`]: the lookup, the wait for the lock and the
/// computation are awaited; consuming the returned iterator then reads or stores
/// chunks with blocking backend calls (one per window read, one per chunk written).
/// A hit reads and checks every chunk before returning, since a corrupt chunk could
/// not be recomputed from inside the (sync) iterator.
pub async fn memoize_iter_async<'a, T, I, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> Fut + 'a,
) -> MemoIter<'a, T>
where
    T: Serialize + DeserializeOwned + 'a,
    I: IntoIterator<Item = T>,
    I::IntoIter: 'a,
    Fut: Future<Output = I>,
{
    let context = Context::new(key, opts);
    let forced = opts.force_overwrite || take_forced();
    let store = match prepare_async(&context, forced).await {
        Prepared::Read(reader) => {
            return MemoIter {
                state: State::Reading(reader),
            };
        }
        Prepared::Write(store) => store,
    };
    let inner = Box::new(compute().await.into_iter());
    MemoIter {
        state: State::Writing(Writer {
            context,
            inner,
            store,
            skip: 0,
        }),
    }
}

/// What an async call found before computing.
enum Prepared<'a, T> {
    /// A stored sequence, read and checked whole.
    Read(Reader<'a, T>),
    /// A miss: compute, and store through this (none when the backend failed).
    Write(Option<Store>),
}

/// The async lookup and lock, as [`open`] does them, for [`memoize_iter_async`].
async fn prepare_async<'a, T: 'a>(context: &Context<T>, forced: bool) -> Prepared<'a, T> {
    let call = context.call(forced);
    if !forced {
        match call.fetch_async::<Manifest<T>>().await {
            Ok(Some(manifest)) => {
                if let Some(chunks) = read_all_async(context, &manifest).await {
                    return Prepared::Read(Reader::prefetched(context.clone(), manifest, chunks));
                }
            }
            Ok(None) => {}
            Err(()) => return Prepared::Write(None),
        }
    }
    let Some(options) = call.opts.lock else {
        return Prepared::Write(Some(Store::new(context, None)));
    };
    let (lock, timeout) = call.lock(options);
    let token = new_token();
    match call
        .acquire_async::<Manifest<T>>(&lock, timeout, &token, options.expire)
        .await
    {
        Ok(Acquired::Locked) => {
            let guard = LockGuard::adopt(&lock, Arc::clone(&call.backend), token);
            Prepared::Write(Some(Store::new(context, Some(guard))))
        }
        Ok(Acquired::Found(manifest, _)) => match read_all_async(context, &manifest).await {
            Some(chunks) => Prepared::Read(Reader::prefetched(context.clone(), manifest, chunks)),
            // Stored meanwhile but broken: recompute and overwrite.
            None => Prepared::Write(Some(Store::new(context, None))),
        },
        Err(LockError::Backend(err)) => {
            call.fail_open(&err);
            Prepared::Write(None)
        }
        Err(err) => {
            call.lock_missed(&err);
            Prepared::Write(Some(Store::new(context, None)))
        }
    }
}

/// Reads every chunk of `manifest` and checks that all its items decode.
async fn read_all_async<T>(
    context: &Context<T>,
    manifest: &Manifest<T>,
) -> Option<VecDeque<Vec<u8>>> {
    let key = crate::key::make_cache_key(&context.key);
    let names: Vec<String> = (0..manifest.chunks as usize)
        .map(|i| key.chunk_key(i))
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

/// Starts reading or computing: the lookup and the lock, as in `memoize`. `skip`
/// items are passed over (the caller already has them, from a broken read).
fn open<'a, T: 'a>(
    context: Context<T>,
    compute: Compute<'a, T>,
    forced: bool,
    skip: u64,
) -> State<'a, T> {
    let call = context.call(forced);
    if !forced {
        match call.fetch::<Manifest<T>>() {
            Ok(Some(manifest)) => {
                return State::Reading(Reader::new(context, manifest, compute, skip));
            }
            Ok(None) => {}
            Err(()) => return State::Writing(Writer::new(context, compute, None, skip)),
        }
    }
    let Some(options) = call.opts.lock else {
        let store = Store::new(&context, None);
        return State::Writing(Writer::new(context, compute, Some(store), skip));
    };
    let (lock, timeout) = call.lock(options);
    let token = new_token();
    let store = match call.acquire::<Manifest<T>>(&lock, timeout, &token, options.expire) {
        Ok(Acquired::Found(manifest, _)) => {
            return State::Reading(Reader::new(context, manifest, compute, skip));
        }
        Ok(Acquired::Locked) => {
            let guard = LockGuard::adopt(&lock, Arc::clone(&call.backend), token);
            Some(Store::new(&context, Some(guard)))
        }
        Err(LockError::Backend(err)) => {
            call.fail_open(&err);
            None
        }
        Err(err) => {
            call.lock_missed(&err);
            Some(Store::new(&context, None))
        }
    };
    State::Writing(Writer::new(context, compute, store, skip))
}

impl<'a, T: 'a> Iterator for MemoIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.state {
            State::Writing(writer) => {
                let item = writer.next();
                if item.is_none() {
                    self.state = State::Finished;
                }
                item
            }
            State::Reading(reader) => match reader.next() {
                Ok(Some(item)) => Some(item),
                Ok(None) => {
                    self.state = State::Finished;
                    None
                }
                Err(why) => {
                    tracing::warn!(key = %reader.context.key, why, "stored sequence unreadable; recomputing");
                    let State::Reading(reader) =
                        std::mem::replace(&mut self.state, State::Finished)
                    else {
                        return None;
                    };
                    let Some(compute) = reader.compute else {
                        // An async hit was checked whole before it was returned.
                        return None;
                    };
                    self.state = open(reader.context, compute, true, reader.yielded);
                    self.next()
                }
            },
            State::Finished => None,
        }
    }
}

/// A stored sequence, read window by window.
struct Reader<'a, T> {
    context: Context<T>,
    manifest: Manifest<T>,
    /// The next chunk to fetch.
    next_chunk: u32,
    /// Fetched chunks not yet decoded (`None`: missing).
    window: VecDeque<Option<Vec<u8>>>,
    /// The chunk being decoded, and the offset of its next item.
    current: Option<(Vec<u8>, usize)>,
    yielded: u64,
    skip: u64,
    compute: Option<Compute<'a, T>>,
}

impl<'a, T> Reader<'a, T> {
    fn new(context: Context<T>, manifest: Manifest<T>, compute: Compute<'a, T>, skip: u64) -> Self {
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

    fn prefetched(context: Context<T>, manifest: Manifest<T>, chunks: VecDeque<Vec<u8>>) -> Self {
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
    fn next(&mut self) -> Result<Option<T>, &'static str> {
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

    fn next_stored(&mut self) -> Result<Option<T>, &'static str> {
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
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, &'static str> {
        if self.window.is_empty() && self.next_chunk < self.manifest.chunks {
            self.fetch_window()?;
        }
        match self.window.pop_front() {
            Some(Some(chunk)) => Ok(Some(chunk)),
            Some(None) => Err("a chunk is missing"),
            None => Ok(None),
        }
    }

    fn fetch_window(&mut self) -> Result<(), &'static str> {
        let per_window = (WINDOW_BYTES / self.context.opts.chunk_size.max(1)).max(1) as u32;
        let end = self
            .manifest
            .chunks
            .min(self.next_chunk.saturating_add(per_window));
        let key = crate::key::make_cache_key(&self.context.key);
        let names: Vec<String> = (self.next_chunk..end)
            .map(|i| key.chunk_key(i as usize))
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

/// A computation being streamed to the caller and, while `store` lasts, stored.
struct Writer<'a, T> {
    context: Context<T>,
    inner: Box<dyn Iterator<Item = T> + 'a>,
    store: Option<Store>,
    /// Items to store but not yield: the caller already has them.
    skip: u64,
}

impl<'a, T> Writer<'a, T> {
    fn new(context: Context<T>, compute: Compute<'a, T>, store: Option<Store>, skip: u64) -> Self {
        Self {
            context,
            inner: compute(),
            store,
            skip,
        }
    }

    fn next(&mut self) -> Option<T> {
        loop {
            let Some(item) = self.inner.next() else {
                if let Some(store) = self.store.take() {
                    store.commit::<T>(&self.context);
                }
                return None;
            };
            if let Some(store) = &mut self.store {
                if let Err(why) = store.push(&self.context, &item) {
                    tracing::warn!(key = %self.context.key, why, "storing the sequence failed; items keep coming uncached");
                    self.store = None;
                }
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            return Some(item);
        }
    }
}

/// Chunks being written for one sequence. Dropped uncommitted, it deletes them.
struct Store {
    backend: Arc<dyn CacheBackend>,
    key: crate::key::CacheKey,
    /// Keeps the lock alive while the caller consumes slowly; dropped before the lock.
    renewal: Option<crate::renew::Renewal>,
    guard: Option<LockGuard>,
    /// The chunk being filled: envelope, then items.
    buffer: Vec<u8>,
    /// Where the items start in `buffer`.
    header_len: usize,
    scratch: Vec<u8>,
    checksums: Vec<u32>,
    items: u64,
    committed: bool,
}

impl Store {
    fn new<T>(context: &Context<T>, guard: Option<LockGuard>) -> Self {
        Self {
            backend: context.backend(),
            key: crate::key::make_cache_key(&context.key),
            renewal: guard.as_ref().map(LockGuard::keep_alive),
            guard,
            buffer: Vec::new(),
            header_len: 0,
            scratch: Vec::new(),
            checksums: Vec::new(),
            items: 0,
            committed: false,
        }
    }

    fn push<T>(&mut self, context: &Context<T>, item: &T) -> Result<(), &'static str> {
        self.scratch.clear();
        (context.items.encode)(item, &mut self.scratch).map_err(|_| "an item does not encode")?;
        let filled = self.buffer.len() > self.header_len;
        if filled && self.buffer.len() + self.scratch.len() > context.opts.chunk_size {
            self.flush(context)?;
        }
        if self.buffer.is_empty() {
            codec::write_header::<Chunk<T>>(&mut self.buffer, context.opts.version);
            self.header_len = self.buffer.len();
        }
        self.buffer.extend_from_slice(&self.scratch);
        self.items += 1;
        Ok(())
    }

    /// Stores the chunk being filled and extends the lock.
    fn flush<T>(&mut self, context: &Context<T>) -> Result<(), &'static str> {
        let name = self.key.chunk_key(self.checksums.len());
        if context.opts.compress {
            let compressed = lz4_flex::compress_prepend_size(&self.buffer[self.header_len..]);
            self.buffer.truncate(self.header_len);
            self.buffer.extend_from_slice(&compressed);
        }
        let checksum = codec::seal(&mut self.buffer);
        self.backend
            .set(&name, &self.buffer, context.opts.expire)
            .map_err(|_| "the backend failed while storing a chunk")?;
        self.checksums.push(checksum);
        self.buffer.clear();
        if let Some(guard) = &mut self.guard {
            if !matches!(guard.extend(None), Ok(true)) {
                tracing::warn!(key = %self.key, "the lock was lost while storing the sequence; another caller may compute too");
            }
        }
        Ok(())
    }

    /// Stores the last chunk, then the manifest, releasing the lock in the same step.
    fn commit<T>(mut self, context: &Context<T>) {
        if self.buffer.len() > self.header_len && self.flush(context).is_err() {
            return;
        }
        let manifest = Manifest::<T> {
            chunks: self.checksums.len() as u32,
            items: self.items,
            checksums: self.checksums.clone(),
            compressed: context.opts.compress,
            of: PhantomData,
        };
        let Ok(bytes) = codec::encode(&manifest, context.opts.version) else {
            return;
        };
        self.renewal = None;
        let stored = match self.guard.take() {
            Some(guard) => guard
                .store_and_release(self.key.as_str(), &bytes, context.opts.expire)
                .map(|_| ()),
            None => self
                .backend
                .set(self.key.as_str(), &bytes, context.opts.expire),
        };
        match stored {
            Ok(()) => self.committed = true,
            Err(err) => {
                tracing::warn!(key = %self.key, error = %err, "storing the sequence's manifest failed");
            }
        }
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

impl Drop for Store {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for index in 0..self.checksums.len() {
            let _ = self.backend.delete(&self.key.chunk_key(index));
        }
    }
}
