//! The writing side of memoized iterators: the computation streamed to the caller, and
//! its items stored in chunks as they pass, committed last.
//!
//! Each write names its chunks after a generation of its own (a random `u64` recorded
//! in the manifest), so it never touches the chunks of the committed sequence: the
//! manifest swap (`store_and_release`) is the commit. Until then the chunks live only
//! about as long as the lock (`short_ttl`, refreshed in one step as the write goes on);
//! the commit makes them live as long as the value, in one step
//! ([`Backend::expire_many`](crate::Backend::expire_many)). A write given up is cleaned
//! up in one step; one that failed on the backend is left to the short TTL and its
//! lock released on another thread, so after the failed call itself the caller's
//! items are not held up by a cleanup against a failing backend.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::given::{Given, Resuming, changed};
use super::{Chunk, Compute, Context, Manifest};
use crate::backend::CacheBackend;
use crate::codec;
use crate::lock::LockGuard;
use crate::observe;

/// A computation being streamed to the caller and, while `store` lasts, stored.
pub(super) struct Writer<'a, T> {
    context: Context<T>,
    inner: Box<dyn Iterator<Item = T> + 'a>,
    store: Option<Store>,
    /// Items to store but not yield: the caller already has them, and they are
    /// checked to be the same.
    resuming: Option<Resuming>,
    scratch: Vec<u8>,
    /// When the computation began, until it is counted (at its end, or when the
    /// caller drops it first): an iterator's computation is counted like any other.
    started: Option<Instant>,
}

impl<'a, T> Writer<'a, T> {
    pub(super) fn new(
        context: Context<T>,
        compute: Compute<'a, T>,
        store: Option<Store>,
        given: Given,
    ) -> Self {
        // The body runs in `compute()` (an eager query, say): counted from before it.
        let started = Instant::now();
        Self {
            context,
            inner: compute(),
            store,
            resuming: Resuming::behind(given),
            scratch: Vec::new(),
            started: Some(started),
        }
    }

    /// Streams an iterator the caller already computed (the async path).
    /// `started`: when its computation (the future that made `inner`) began.
    pub(super) fn streaming(
        context: Context<T>,
        inner: Box<dyn Iterator<Item = T> + 'a>,
        store: Option<Store>,
        started: Instant,
    ) -> Self {
        Self {
            context,
            inner,
            store,
            resuming: None,
            scratch: Vec::new(),
            started: Some(started),
        }
    }

    /// Counts the computation once, with the time it has taken so far.
    fn counted(&mut self) {
        if let Some(started) = self.started.take() {
            observe::computed(self.context.opts.name, &self.context.key, started.elapsed());
        }
    }

    /// The next item new to the caller.
    ///
    /// # Panics
    ///
    /// When the computation does not begin with the items the caller already has
    /// (see [`given`](super::given)).
    pub(super) fn next(&mut self) -> Option<T> {
        loop {
            let Some(item) = self.inner.next() else {
                self.counted();
                if self.resuming.is_some() {
                    // Fewer items than the caller already has.
                    self.store = None;
                    changed(&self.context.key);
                }
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
            if let Some(resuming) = &mut self.resuming {
                self.scratch.clear();
                let passed = (self.context.items.encode)(&item, &mut self.scratch)
                    .map_err(|_| super::given::Changed)
                    .and_then(|()| resuming.pass(&self.scratch));
                match passed {
                    Ok(false) => continue,
                    Ok(true) => self.resuming = None,
                    Err(_) => {
                        self.store = None;
                        changed(&self.context.key);
                    }
                }
                continue;
            }
            return Some(item);
        }
    }
}

impl<T> Drop for Writer<'_, T> {
    fn drop(&mut self) {
        self.counted();
    }
}

/// Chunks being written for one sequence; see the module docs.
pub(super) struct Store {
    backend: Arc<dyn CacheBackend>,
    key: crate::key::CacheKey,
    /// This write's chunk names: `key.chunk_key(generation, index)`.
    generation: u64,
    /// How long chunks live until the commit: about the lock's expiry.
    short_ttl: Duration,
    /// When the written chunks' short TTL was last reset.
    refreshed: Instant,
    /// Whether this write replaces a committed sequence (a forced refresh), whose
    /// chunks are then shortened to `short_ttl` after the commit.
    replaces: bool,
    /// The mix of its tags' epochs, as read before the computation began (0:
    /// untagged): recorded in the manifest. A replaced sequence recorded under other
    /// epochs is not found, so its chunks are left to their own TTL (the value's).
    tags: u64,
    /// Keeps the lock alive while the caller consumes slowly; dropped before the lock.
    renewal: Option<crate::lock::renew::Renewal>,
    guard: Option<LockGuard>,
    /// The chunk being filled: envelope (`codec::HEADER_LEN` bytes), then items.
    buffer: Vec<u8>,
    scratch: Vec<u8>,
    checksums: Vec<u32>,
    items: u64,
    state: Progress,
}

/// Where a write stands, for what its drop must clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Chunks are being written; dropped now, the write was given up.
    Writing,
    /// The backend failed: the chunks are left to their short TTL.
    Failed,
    /// The manifest points at the chunks (or the write is settled otherwise).
    Done,
}

impl Store {
    /// `tags`: the mix of its tags' epochs the manifest records (0: untagged).
    pub(super) fn new<T>(
        context: &Context<T>,
        guard: LockGuard,
        replaces: bool,
        tags: u64,
    ) -> Self {
        let short_ttl = crate::limits::lock_expire(context.opts.lock.unwrap_or_default().expire);
        Self {
            backend: context.backend(),
            key: context.key.clone(),
            generation: fastrand::u64(..),
            short_ttl,
            refreshed: Instant::now(),
            replaces,
            tags,
            renewal: Some(guard.keep_alive()),
            guard: Some(guard),
            buffer: Vec::new(),
            scratch: Vec::new(),
            checksums: Vec::new(),
            items: 0,
            state: Progress::Writing,
        }
    }

    pub(super) fn push<T>(&mut self, context: &Context<T>, item: &T) -> Result<(), &'static str> {
        self.scratch.clear();
        (context.items.encode)(item, &mut self.scratch).map_err(|_| "an item does not encode")?;
        if self.has_items() && self.buffer.len() + self.scratch.len() > context.opts.chunk_size {
            self.flush(context)?;
        }
        if self.buffer.is_empty() {
            codec::write_header::<Chunk<T>>(&mut self.buffer, context.opts.version);
        }
        self.buffer.extend_from_slice(&self.scratch);
        self.items += 1;
        Ok(())
    }

    /// Whether the chunk being filled holds any item yet.
    fn has_items(&self) -> bool {
        self.buffer.len() > codec::HEADER_LEN
    }

    /// The names of the chunks written so far.
    fn chunk_names(&self) -> Vec<String> {
        (0..self.checksums.len())
            .map(|index| self.key.chunk_key(self.generation, index))
            .collect()
    }

    /// Stores the chunk being filled (for the short TTL), and resets the short TTL of
    /// the chunks written so far once a third of it has passed.
    pub(super) fn flush<T>(&mut self, context: &Context<T>) -> Result<(), &'static str> {
        if self.guard.as_ref().is_some_and(LockGuard::is_lost) {
            return Err("the lock was lost; another caller may compute too");
        }
        let name = self.key.chunk_key(self.generation, self.checksums.len());
        if context.opts.compress {
            let compressed = lz4_flex::compress_prepend_size(&self.buffer[codec::HEADER_LEN..]);
            self.buffer.truncate(codec::HEADER_LEN);
            self.buffer.extend_from_slice(&compressed);
        }
        let checksum = codec::seal(&mut self.buffer);
        if self
            .backend
            .set(&name, &self.buffer, self.short_ttl)
            .is_err()
        {
            self.state = Progress::Failed;
            return Err("the backend failed while storing a chunk");
        }
        self.checksums.push(checksum);
        self.buffer.clear();
        if self.refreshed.elapsed() >= self.short_ttl / 3 {
            let names = self.chunk_names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            if self.backend.expire_many(&names, self.short_ttl).is_err() {
                self.state = Progress::Failed;
                return Err("the backend failed while keeping the chunks alive");
            }
            self.refreshed = Instant::now();
        }
        Ok(())
    }

    /// Stores the last chunk, makes every chunk live as long as the value (one step),
    /// then stores the manifest, releasing the lock in the same step: the commit.
    pub(super) fn commit<T>(mut self, context: &Context<T>) {
        if self.has_items() && self.flush(context).is_err() {
            return;
        }
        let ttl = context.opts.expire;
        let names = self.chunk_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if !names.is_empty() {
            match self.backend.expire_many(&names, ttl) {
                Ok(present) if present == names.len() => {}
                Ok(_) => {
                    // Some expired before the commit (a very slow consumer): committing
                    // would point at missing chunks. The lock is given back on drop.
                    tracing::warn!(key = %self.key, "chunks expired before the sequence was committed; not stored");
                    self.state = Progress::Done;
                    return;
                }
                Err(err) => {
                    tracing::warn!(key = %self.key, error = %err, "storing the sequence failed");
                    self.state = Progress::Failed;
                    return;
                }
            }
        }
        let manifest = Manifest::<T> {
            chunks: self.checksums.len() as u32,
            items: self.items,
            checksums: self.checksums.clone(),
            compressed: context.opts.compress,
            generation: self.generation,
            of: PhantomData,
        };
        let fence = self.guard.as_ref().map_or(0, LockGuard::fencing_token);
        // Stamped fresh for as long as it is stored: a near cache keeps a copy of it no
        // longer than that (a manifest's reader ignores the stamp).
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let stamp = codec::Stamp {
            fresh_until_ms: context.opts.now_ms().saturating_add(ttl_ms),
            compute_ms: 0,
        };
        let encoded = codec::encode_tagged(
            codec::Codec::Bincode,
            &manifest,
            context.opts.version,
            self.tags,
            fence,
            stamp,
        );
        let Ok(bytes) = encoded else {
            return;
        };
        let previous = if self.replaces {
            self.previous_chunks(context)
        } else {
            Vec::new()
        };
        self.renewal = None;
        // Every commit takes its place in the key's order through the lock (taken
        // only here, once).
        let mut liveness = None;
        let stored = match self.guard.take() {
            Some(guard) => {
                liveness = Some(guard.liveness());
                guard.store_and_release(self.key.as_str(), &bytes, ttl)
            }
            None => Ok(false),
        };
        self.state = Progress::Done;
        match stored {
            Ok(true) => self.shorten(&previous),
            Ok(false) => {
                // Refused (the lock was lost: the key was invalidated, or the lock
                // expired): these chunks will never be read. Said as the value path
                // says it: DEBUG for an invalidation, WARN for an expiry.
                let voided = liveness.is_some_and(|liveness| liveness.voided_now());
                observe::lock_lost(context.opts.name, &self.key, voided, "sequence");
                let _ = self.backend.expire_many(&names, Duration::ZERO);
            }
            Err(err) => {
                tracing::warn!(key = %self.key, error = %err, "storing the sequence's manifest failed");
            }
        }
    }

    /// The chunk names of the sequence committed before this write, if readable.
    fn previous_chunks<T>(&self, context: &Context<T>) -> Vec<String> {
        let Ok(Some(bytes)) = self.backend.get(self.key.as_str()) else {
            return Vec::new();
        };
        Manifest::<T>::read(&bytes, context.opts.version, self.tags)
            .filter(|previous| {
                previous.generation != self.generation
                    && super::read::check_manifest(previous).is_ok()
            })
            .map(|previous| super::read::chunk_names(&self.key, &previous, 0..previous.chunks))
            .unwrap_or_default()
    }

    /// Lets the replaced sequence's chunks go after `short_ttl` (a reader in the middle
    /// of it has that long to finish; after that it reads a miss, never a mix).
    fn shorten(&self, previous: &[String]) {
        if previous.is_empty() {
            return;
        }
        let previous: Vec<&str> = previous.iter().map(String::as_str).collect();
        let _ = self.backend.expire_many(&previous, self.short_ttl);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A write given up (the iterator dropped early, or the lock lost): its chunks
        // go in one step. A failed one is left to the short TTL: another call to a
        // failing backend would hold up the caller's items once more.
        if self.state == Progress::Writing && !self.checksums.is_empty() {
            let names = self.chunk_names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = self.backend.expire_many(&names, Duration::ZERO);
        }
        // After a failure the lock is given back off the caller's thread: the backend
        // may take a whole response timeout to answer (or not).
        if self.state == Progress::Failed {
            self.renewal = None;
            if let Some(guard) = self.guard.take() {
                // Should the thread not start, the guard drops with the closure and
                // releases here.
                let _ = std::thread::Builder::new()
                    .name("cache-memoize-release".into())
                    .spawn(move || {
                        let _ = guard.give_back();
                    });
            }
        }
    }
}
