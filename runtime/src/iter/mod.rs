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

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::CacheBackend;
use crate::call::Call;
use crate::codec::{self, Codec, Stamp};
use crate::key::{CacheKey, make_cache_key};
use crate::lock::LockGuard;
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::take_forced;
use crate::sequence::{Driver, Lookup, Storing};

mod read;
mod write;

use read::{Reader, read_all_async};
use write::{Store, Writer};

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

impl<T> Manifest<T> {
    /// Reads a manifest for the sequence (manifests carry no freshness stamp: a
    /// memoized iterator is fresh until it expires).
    fn decode(_codec: Codec, bytes: &[u8], version: u32) -> Option<(Self, Stamp)> {
        codec::decode::<Self>(bytes, version).map(|manifest| (manifest, Stamp::FOREVER))
    }
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
    /// The finished key, made once: every chunk and the manifest derive from it.
    key: CacheKey,
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
            key: make_cache_key(key),
            // Chunks and manifests are always bincode, whatever the options say.
            opts: opts
                .clone()
                .backend(opts.backend_handle())
                .codec(crate::codec::Codec::Bincode),
            items: ItemCodec::new(),
        }
    }
}

impl<T> Context<T> {
    fn call(&self, refresh: Refresh) -> Call<'_> {
        Call::for_key(self.key.clone(), &self.opts, refresh)
    }

    fn backend(&self) -> Arc<dyn CacheBackend> {
        self.opts.backend_handle()
    }

    /// Where a computed sequence is stored, as the sequence decided.
    fn store(&self, storing: Storing, lock: Option<LockGuard>) -> Option<Store> {
        match storing {
            Storing::Nothing => None,
            Storing::Unlocked => Some(Store::new(self, None)),
            Storing::Locked => Some(Store::new(self, lock)),
        }
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
    let refresh = Refresh::of(opts, take_forced());
    let compute: Compute<'a, T> = Box::new(move || Box::new(compute().into_iter()));
    MemoIter {
        state: open(context, compute, refresh, 0),
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
    let mut refresh = Refresh::of(opts, take_forced());
    let store = loop {
        let call = context.call(refresh);
        let mut machine = call.machine_reading(false, Manifest::<T>::decode);
        let mut driver = Driver::nonblocking(&call);
        match driver.lookup_async(&mut machine).await {
            Lookup::Found(manifest, _) => match read_all_async(&context, &manifest).await {
                Ok(chunks) => {
                    let reader = Reader::prefetched(context.clone(), manifest, chunks);
                    return MemoIter {
                        state: State::Reading(reader),
                    };
                }
                Err(why) => {
                    tracing::warn!(key = %context.key, %why, "stored sequence unreadable; recomputing");
                    // A forced sequence never reads, so this loops at most once more.
                    refresh = Refresh::Forced;
                }
            },
            Lookup::Compute(storing) => break context.store(storing, driver.take_lock()),
            // Only a refresh skips, and iterators are never refreshed that way.
            Lookup::Skip => break None,
        }
    };
    let inner = Box::new(compute().await.into_iter());
    MemoIter {
        state: State::Writing(Writer::streaming(context, inner, store)),
    }
}

/// Starts reading or computing: the sequence's lookup, as in `memoize`. `skip` items
/// are passed over (the caller already has them, from a broken read).
fn open<'a, T: 'a>(
    context: Context<T>,
    compute: Compute<'a, T>,
    refresh: Refresh,
    skip: u64,
) -> State<'a, T> {
    let (lookup, lock) = {
        let call = context.call(refresh);
        let mut machine = call.machine_reading(false, Manifest::<T>::decode);
        let mut driver = Driver::blocking(&call);
        let lookup = driver.lookup(&mut machine);
        (lookup, driver.take_lock())
    };
    match lookup {
        Lookup::Found(manifest, _) => State::Reading(Reader::new(context, manifest, compute, skip)),
        // Only a refresh skips, and iterators are never refreshed that way.
        Lookup::Skip => State::Writing(Writer::new(context, compute, None, skip)),
        Lookup::Compute(storing) => {
            let store = context.store(storing, lock);
            State::Writing(Writer::new(context, compute, store, skip))
        }
    }
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
                    tracing::warn!(key = %reader.context.key, %why, "stored sequence unreadable; recomputing");
                    let State::Reading(reader) =
                        std::mem::replace(&mut self.state, State::Finished)
                    else {
                        return None;
                    };
                    let Some(compute) = reader.compute else {
                        // An async hit was checked whole before it was returned.
                        return None;
                    };
                    self.state = open(reader.context, compute, Refresh::Forced, reader.yielded);
                    self.next()
                }
            },
            State::Finished => None,
        }
    }
}
