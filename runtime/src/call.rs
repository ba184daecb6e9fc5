//! One memoized call: its key, options and backend, how its value is encoded, and how
//! what happened to it is reported through `tracing`. The value path (`memoize`) and
//! the iterator path (`iter`) both run their sequence through one of these.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::CacheBackend;
use crate::codec;
use crate::key::{CacheKey, make_cache_key};
use crate::options::{MemoizeOptions, Refresh, Wait};
use crate::renew::Renewal;
use crate::sequence::{Decoder, LockPolicy, Machine, Note, Policy};

/// One memoized call: the key, the options and the backend it runs against.
pub(crate) struct Call<'a> {
    pub(crate) key: CacheKey,
    pub(crate) opts: &'a MemoizeOptions,
    pub(crate) backend: Arc<dyn CacheBackend>,
    pub(crate) refresh: Refresh,
}

impl<'a> Call<'a> {
    pub(crate) fn new(key: &str, opts: &'a MemoizeOptions, refresh: Refresh) -> Self {
        Self::for_key(make_cache_key(key), opts, refresh)
    }

    /// A call for a key already made (an iterator keeps its key for its whole life).
    pub(crate) fn for_key(key: CacheKey, opts: &'a MemoizeOptions, refresh: Refresh) -> Self {
        Self {
            key,
            opts,
            backend: opts.backend_handle(),
            refresh,
        }
    }

    /// What concurrent misses of this call coalesce on in-process: the key, and which
    /// backend it lives in (two backends' values are not shared).
    pub(crate) fn flight_key(&self) -> String {
        format!("{:p}|{}", Arc::as_ptr(&self.backend).cast::<()>(), self.key)
    }

    /// The sequence for this call, reading stored bytes as a `T`. `coalesce`: whether
    /// concurrent misses in this process wait for one leader (a forced refresh never
    /// does: it must not return another caller's older value).
    pub(crate) fn machine<T: DeserializeOwned>(&self, coalesce: bool) -> Machine<T> {
        let policy = Policy {
            refresh: self.refresh,
            lock: self.opts.lock.map(|lock| LockPolicy {
                wait: Wait::of(&lock),
                retry: lock.retry,
            }),
            coalesce: coalesce && self.refresh == Refresh::IfMissing,
        };
        let decoder = Decoder {
            decode: codec::decode_with::<T>,
            codec: self.opts.codec,
            version: self.opts.version,
        };
        Machine::new(policy, decoder, fastrand::Rng::new())
    }

    pub(crate) fn encode<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        codec::encode_with(self.opts.codec, value, self.opts.version)
            .inspect_err(|err| tracing::warn!(key = %self.key, error = %err, "cannot encode the value; not stored"))
            .ok()
    }

    /// Reports what the sequence noted.
    pub(crate) fn report(&self, note: Option<Note>) {
        let key = &self.key;
        match note {
            None => {}
            // A skipped backend reported it once itself (circuit breaker, no runtime).
            Some(Note::FailOpen(err) | Note::StoreFailed(err)) if err.is_skipped() => {
                tracing::debug!(%key, error = %err, "cache backend skipped; computing without it");
            }
            Some(Note::FailOpen(err)) => {
                tracing::warn!(%key, error = %err, "cache backend failed; computing without it");
            }
            Some(Note::LockTimeout { waited }) => tracing::warn!(
                %key,
                ?waited,
                "lock not acquired: timed out waiting for it; computing without it"
            ),
            Some(Note::LockBusy) => tracing::debug!(
                %key,
                "lock not acquired: held by another caller and not blocking; computing without it"
            ),
            Some(Note::StoreFailed(err)) => {
                tracing::warn!(%key, error = %err, "cache backend failed; the value was not stored");
            }
            Some(Note::LockLost) => tracing::warn!(
                %key,
                "the lock was lost while computing (it expired, a later caller took it, or the key was invalidated); the value was returned but not stored"
            ),
        }
    }

    /// Warns when the lock was lost while computing (a renewal found it gone).
    pub(crate) fn report_renewal(&self, renewal: Option<&Renewal>) {
        if renewal.is_some_and(Renewal::lost) {
            tracing::warn!(
                key = %self.key,
                "the lock was lost while computing; another caller may compute too"
            );
        }
    }
}
