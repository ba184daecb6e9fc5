//! One memoized call: its key, options and backend, how its value is encoded, and how
//! what happened to it is reported through `tracing`. The value path (`memoize`) and
//! the iterator path (`iter`) both run their sequence through one of these.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::machine::{DecodeFn, Decoder, FreshPolicy, Life, LockPolicy, Machine, Note, Policy};
use crate::backend::CacheBackend;
use crate::codec::{self, Stamp};
use crate::kept::Share;
use crate::key::{self, CacheKey};
use crate::lock::LockOptions;
use crate::lock::renew::Renewal;
use crate::observe;
use crate::options::{MemoizeOptions, Refresh, Wait};
use crate::registry;

/// One memoized call: the key, the options and the backend it runs against.
pub(crate) struct Call<'a> {
    pub(crate) key: CacheKey,
    pub(crate) opts: &'a MemoizeOptions,
    pub(crate) backend: BackendRef<'a>,
    pub(crate) refresh: Refresh,
    /// Whether the computation's `Err` is a value not to cache (a `None` under
    /// `cache_none = false`) rather than a failure: it replaces the stored value with
    /// the mark of an absent one, so that the stale or older value is not served again.
    pub(crate) absent: bool,
    /// The keys of its tags' epochs (see `crate::tags`), made when the call is.
    pub(crate) tags: Vec<String>,
}

impl Drop for Call<'_> {
    #[inline]
    fn drop(&mut self) {
        key::recycle(&mut self.key);
    }
}

/// The backend a call runs against: the one its options name, borrowed (a hit then
/// touches no reference count), or a handle held for the call (another thread may
/// register a new backend meanwhile).
pub(crate) enum BackendRef<'a> {
    Named(&'a Arc<dyn CacheBackend>),
    /// This thread's handle on the registered backend (see [`registry::handle`]), or a
    /// revalidation's own handle on its call's backend.
    Held(registry::Handle),
}

impl BackendRef<'_> {
    #[inline]
    fn of(opts: &MemoizeOptions) -> BackendRef<'_> {
        opts.backend
            .as_ref()
            .map_or_else(|| BackendRef::Held(registry::handle()), BackendRef::Named)
    }

    /// A handle of its own, for work that outlives the call (a lock guard, a refresh).
    pub(crate) fn to_arc(&self) -> Arc<dyn CacheBackend> {
        Arc::clone(self.arc())
    }

    fn arc(&self) -> &Arc<dyn CacheBackend> {
        match self {
            BackendRef::Named(backend) => backend,
            BackendRef::Held(handle) => handle,
        }
    }

    /// Which backend this is (for coalescing and health reports).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(self.arc()).cast::<()>() as usize
    }
}

impl std::ops::Deref for BackendRef<'_> {
    type Target = dyn CacheBackend;

    fn deref(&self) -> &Self::Target {
        &**self.arc()
    }
}

impl<'a> Call<'a> {
    #[inline]
    pub(crate) fn new(key: &str, opts: &'a MemoizeOptions, refresh: Refresh) -> Self {
        Self::for_key(key::pooled_cache_key(key), opts, refresh)
    }

    /// A call for a key already made (an iterator keeps its key for its whole life).
    #[inline]
    pub(crate) fn for_key(key: CacheKey, opts: &'a MemoizeOptions, refresh: Refresh) -> Self {
        Self {
            key,
            opts,
            backend: BackendRef::of(opts),
            refresh,
            absent: false,
            tags: tag_keys(opts),
        }
    }

    /// This call with `tags` of its own before its options' (a batch element's, rendered
    /// from the element by the attribute's tag templates): its value is read and
    /// written under their epochs too.
    pub(crate) fn with_element_tags(mut self, tags: &[String]) -> Self {
        if !tags.is_empty() {
            let mut keys: Vec<String> = tags.iter().map(|tag| crate::tags::tag_key(tag)).collect();
            keys.append(&mut self.tags);
            self.tags = keys;
        }
        self
    }

    /// Whether the call has tags.
    #[inline]
    pub(crate) fn tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// This call, with its computation's `Err` taken as a value not to cache (see
    /// [`absent`](Self::absent)).
    pub(crate) fn removing_absent(mut self, absent: bool) -> Self {
        self.absent = absent;
        self
    }

    /// Whether an absent value is stored as its mark: only by a call that replaces a
    /// value (a refresh, a forced call). A plain miss found nothing to replace, and
    /// holds the lock, so nothing else landed meanwhile: it stores nothing.
    pub(crate) fn marks_absent(&self) -> bool {
        self.absent && self.refresh != Refresh::IfMissing
    }

    /// The call that refreshes this one's stale value.
    pub(crate) fn revalidation(&self) -> Call<'a> {
        Self {
            key: self.key.clone(),
            opts: self.opts,
            backend: BackendRef::Held(Arc::new(self.backend.to_arc())),
            refresh: Refresh::Revalidate,
            absent: self.absent,
            tags: self.tags.clone(),
        }
    }

    /// This call's options, owned, naming the backend it runs against (for work that
    /// outlives the call: a detached refresh).
    pub(crate) fn owned_options(&self) -> MemoizeOptions {
        self.opts.clone().backend(self.backend.to_arc())
    }

    /// What concurrent misses of this call coalesce on in-process: the key, and which
    /// backend it lives in (two backends' values are not shared).
    pub(crate) fn flight_key(&self) -> String {
        format!("{:x}|{}", self.backend.id(), self.key)
    }

    /// The sequence for this call, reading stored bytes as a `T`. `coalesce`: whether
    /// concurrent misses in this process wait for one leader (a forced refresh never
    /// does: it must not return another caller's older value).
    /// `share`: with `keep_decoded`, how its values are kept decoded.
    #[inline]
    pub(crate) fn machine<T: DeserializeOwned>(
        &self,
        coalesce: bool,
        share: Option<Share<T>>,
    ) -> Machine<'_, T> {
        self.machine_reading(coalesce, codec::decode_tagged::<T>, share)
    }

    /// The sequence for this call, reading stored bytes with `decode`.
    #[inline]
    pub(crate) fn machine_reading<T>(
        &self,
        coalesce: bool,
        decode: DecodeFn<T>,
        share: Option<Share<T>>,
    ) -> Machine<'_, T> {
        let freshness = self.opts.freshness;
        // Without `stale` or `beta`, the backend's own TTL is the only expiry there is:
        // a value is fresh for as long as it is stored, and the clock is not read.
        let freshness = if freshness.stale.is_zero() && freshness.beta == 0.0 {
            FreshPolicy {
                jitter: freshness.jitter,
                ..FreshPolicy::TTL_ONLY
            }
        } else {
            FreshPolicy {
                stale_ms: millis(freshness.stale),
                beta: freshness.beta,
                fail_safe: self.opts.fail_safe_throttle(),
                back_off: self.opts.lock.unwrap_or_default().retry,
                ttl_only: false,
                jitter: freshness.jitter,
            }
        };
        let policy = Policy {
            refresh: self.refresh,
            lock: self.lock_policy(),
            lock_expire: self.opts.lock.unwrap_or_default().expire,
            expire: self.opts.expire,
            coalesce: coalesce && self.refresh == Refresh::IfMissing,
            freshness,
        };
        let decoder = Decoder {
            decode,
            codec: self.opts.codec,
            version: self.opts.version,
            share,
        };
        Machine::new(policy, decoder, &self.key, None).tagged(self.tagged())
    }

    /// How this call waits for the key's lock. A forced refresh always waits for a held
    /// lock (without `lock`, or with `blocking = false`, at most the lock's expiry): it
    /// must store its value after the holder's, never compute it only to return it
    /// while the holder's older value lands.
    fn lock_policy(&self) -> Option<LockPolicy> {
        let policy = |lock: LockOptions, wait| LockPolicy {
            wait,
            retry: lock.retry,
        };
        match self.refresh {
            Refresh::Forced => {
                let lock = self.opts.lock.unwrap_or_default();
                let wait = match Wait::of(&lock) {
                    Wait::Never => Wait::For(lock.expire),
                    wait => wait,
                };
                Some(policy(lock, wait))
            }
            Refresh::IfMissing | Refresh::Revalidate => self
                .opts
                .lock
                .as_ref()
                .map(|lock| policy(*lock, Wait::of(lock))),
        }
    }

    /// Encodes a value computed in `took` (`None`: the mark of an absent value) under
    /// the fencing token `fence` (its holder's, taken before it computed), stamped with
    /// when it stops being fresh (`life.fresh` from now, as the machine decided).
    pub(crate) fn encode<T: Serialize>(
        &self,
        value: Option<&T>,
        took: Duration,
        fence: u64,
        life: Life,
    ) -> Option<Vec<u8>> {
        let stamp = Stamp {
            fresh_until_ms: self.opts.now_ms().saturating_add(millis(life.fresh)),
            compute_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
        };
        let (codec, version) = (self.opts.codec, self.opts.version);
        // No epochs to record (one was deleted as it was read): not stored.
        let tags = life.tags?;
        match value {
            Some(value) => codec::encode_tagged(codec, value, version, tags, fence, stamp),
            None => codec::encode_absent(codec, version, fence, stamp),
        }
        .inspect_err(|err| tracing::warn!(key = %self.key, error = %err, "cannot encode the value; not stored"))
            .ok()
    }

    /// Whether a value with `stamp` may still be served now (within `expire + stale`),
    /// judged again after an inline refresh that did not replace it.
    pub(crate) fn servable(&self, stamp: Stamp) -> bool {
        let stale_ms = millis(self.opts.freshness.stale);
        super::servable(stamp, stale_ms, self.opts.now_ms())
    }

    /// Reports what the sequence noted.
    pub(crate) fn report(&self, note: Option<Note>) {
        let key = &self.key;
        let failed = match &note {
            Some(Note::FailOpen(_)) => "cache backend failed; computing without it",
            Some(Note::StoreFailed(_)) => {
                "cache backend failed; the value may not have been stored (a large value can outlast the response timeout)"
            }
            _ => "cache backend failed; serving the stale value",
        };
        match note {
            None => {}
            // A forced refresh lands or says so, each time: its store's failure is not
            // left to the backend's once-a-minute summary (another call's failure may
            // have opened it a moment before) nor to the breaker's one report.
            Some(Note::StoreFailed(err)) if self.refresh == Refresh::Forced => tracing::warn!(
                %key,
                error = %err,
                "a forced refresh's store failed: its value is returned but may not have been stored"
            ),
            // A skipped backend reported it once itself (circuit breaker, no runtime).
            Some(Note::FailOpen(err) | Note::StoreFailed(err)) if err.is_skipped() => {
                tracing::debug!(%key, error = %err, "cache backend skipped; computing without it");
            }
            Some(Note::LockTimeout { waited }) if self.refresh == Refresh::Forced => {
                tracing::warn!(
                    %key,
                    ?waited,
                    "a forced refresh timed out waiting for the lock: its value is returned but not stored"
                );
            }
            Some(Note::LockTimeout { waited }) => tracing::warn!(
                %key,
                ?waited,
                "lock not acquired: timed out waiting for it; computing without it"
            ),
            Some(Note::Concurrent) => tracing::debug!(
                %key,
                "another caller is computing this key; computing too, without storing"
            ),
            Some(Note::LockBusy) => tracing::debug!(
                %key,
                "lock not acquired: held by another caller and not blocking; computing without it"
            ),
            Some(
                Note::FailOpen(err) | Note::StoreFailed(err) | Note::RevalidationFailed(Some(err)),
            ) => observe::backend_failed(self.backend_id(), key, &err, failed),
            Some(Note::RevalidationFailed(None)) => tracing::warn!(
                %key,
                "revalidating a stale value failed; serving the stale value until the fail-safe throttle allows another try"
            ),
            Some(Note::LockLost) => tracing::warn!(
                %key,
                "the lock was lost while computing (it expired, a later caller took it, or the key was invalidated); the value was returned but not stored"
            ),
        }
    }

    /// Which backend this call runs against, for reports about its health.
    pub(crate) fn backend_id(&self) -> usize {
        self.backend.id()
    }

    /// Warns when the lock was lost while computing (a renewal found it gone), unless
    /// an invalidation voided it (said when the store is refused).
    pub(crate) fn report_renewal(&self, renewal: Option<&Renewal>) {
        if renewal.is_some_and(|renewal| renewal.lost() && !renewal.voided()) {
            tracing::warn!(
                key = %self.key,
                "the lock was lost while computing (it expired); another caller may compute too"
            );
        }
    }
}

/// The keys of the epochs of `opts`' tags (none made, nor collected, for an untagged
/// call: every hit of one runs this).
#[inline]
fn tag_keys(opts: &MemoizeOptions) -> Vec<String> {
    if opts.tags.is_empty() {
        return Vec::new();
    }
    opts.tags
        .iter()
        .map(|tag| crate::tags::tag_key(tag))
        .collect()
}

/// A duration in whole milliseconds (saturating).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
