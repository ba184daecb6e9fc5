//! The writing side of memoized iterators: the computation streamed to the caller, and
//! its items stored in chunks as they pass, committed last.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Chunk, Compute, Context, Manifest};
use crate::backend::CacheBackend;
use crate::codec;
use crate::lock::LockGuard;

/// A computation being streamed to the caller and, while `store` lasts, stored.
pub(super) struct Writer<'a, T> {
    context: Context<T>,
    inner: Box<dyn Iterator<Item = T> + 'a>,
    store: Option<Store>,
    /// Items to store but not yield: the caller already has them.
    skip: u64,
}

impl<'a, T> Writer<'a, T> {
    pub(super) fn new(
        context: Context<T>,
        compute: Compute<'a, T>,
        store: Option<Store>,
        skip: u64,
    ) -> Self {
        Self {
            context,
            inner: compute(),
            store,
            skip,
        }
    }

    /// Streams an iterator the caller already computed (the async path).
    pub(super) fn streaming(
        context: Context<T>,
        inner: Box<dyn Iterator<Item = T> + 'a>,
        store: Option<Store>,
    ) -> Self {
        Self {
            context,
            inner,
            store,
            skip: 0,
        }
    }

    pub(super) fn next(&mut self) -> Option<T> {
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
pub(super) struct Store {
    backend: Arc<dyn CacheBackend>,
    key: crate::key::CacheKey,
    /// Keeps the lock alive while the caller consumes slowly; dropped before the lock.
    renewal: Option<crate::renew::Renewal>,
    guard: Option<LockGuard>,
    /// The chunk being filled: envelope (`codec::HEADER_LEN` bytes), then items.
    buffer: Vec<u8>,
    scratch: Vec<u8>,
    checksums: Vec<u32>,
    items: u64,
    committed: bool,
}

impl Store {
    pub(super) fn new<T>(context: &Context<T>, guard: Option<LockGuard>) -> Self {
        Self {
            backend: context.backend(),
            key: context.key.clone(),
            renewal: guard.as_ref().map(LockGuard::keep_alive),
            guard,
            buffer: Vec::new(),
            scratch: Vec::new(),
            checksums: Vec::new(),
            items: 0,
            committed: false,
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

    /// Stores the chunk being filled and extends the lock.
    pub(super) fn flush<T>(&mut self, context: &Context<T>) -> Result<(), &'static str> {
        let name = self.key.chunk_key(self.checksums.len());
        if context.opts.compress {
            let compressed = lz4_flex::compress_prepend_size(&self.buffer[codec::HEADER_LEN..]);
            self.buffer.truncate(codec::HEADER_LEN);
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
    pub(super) fn commit<T>(mut self, context: &Context<T>) {
        if self.has_items() && self.flush(context).is_err() {
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
