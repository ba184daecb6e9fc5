//! The decisions of one memoized call, without I/O: fed what the backend answered and
//! the time it is now (`on(now_ms, event)`: the time comes with every event), it says
//! what to do next as a [`Step`]. It names the keys a step touches (the lock, the
//! throttle mark), the lock's expiry and the stored value's TTL. It reads no clock,
//! logs nothing and touches no backend; the drivers in `driver.rs` do, one blocking
//! and one async.
//!
//! The sequence (Djblets' `cache_memoize` with `lock=`):
//!
//! ```text
//! [GetKept ─kept─▶ judged as Get's bytes] (keep_decoded)
//! Get ─hit──────────────────────────────────────────────▶ Hit
//!  │stale (or drawn early) ─▶ ClaimRefresh ─▶ Hit (to refresh, if this process's
//!  │                                          refresh of the key was not underway)
//!  │miss      (in-process: Join ─follow─▶ AwaitLeader ─landed─▶ Hit, else Join again)
//!  └─lead──▶ GetOrLock ─value──────────────────────────▶ Hit
//!             │  │held ─▶ Pause ─▶ GetOrLock …  (timeout: Get ─hit▶ Hit, miss▶ Compute)
//!             │  └unreadable value ─▶ TakeLock (then as GetOrLock)
//!             └locked ─▶ Compute ─▶ StoreAndRelease | Release ─▶ Finished
//! ```
//!
//! A backend error anywhere before the computation fails open: compute, store nothing.
//! Except for a caller already waiting for another's lock: it keeps waiting through
//! errors (a failover, a cut link), within its timeout and for at most the lock's
//! expiry, so a failover costs at most one extra computation per key, not one per
//! waiter.
//!
//! A revalidation (`Refresh::Revalidate`) takes the key's lock (the one lock of every write
//! of the key) without waiting (`TakeLock`; held: `Skip`), reads the value and the
//! key's throttle mark again under it (`Recheck`), and computes only if the value is
//! still the one whose staleness triggered it and no refresh failed lately: a value
//! stored by another refresher since (another stamp) means the refresh is done, and a
//! throttle mark that a refresh failed within `fail_safe`; either way the lock goes
//! back. A failed refresh leaves the mark and releases the lock (`Throttle`), so a miss
//! never waits for the throttle.

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use crate::backend::GetOrLock;
use crate::coalesce::Landed;
use crate::codec::{Codec, Stamp};
use crate::error::Error;
use crate::kept::{DecodedValue, KeptValue, Share};
use crate::key::CacheKey;
use crate::options::{Refresh, Wait};

/// What the sequence needs to know of the call's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) refresh: Refresh,
    /// `None`: compute on a miss without a lock.
    pub(crate) lock: Option<LockPolicy>,
    /// How long the key's lock lives unless renewed (every store is made under it,
    /// configured or not): the longest a waiter keeps waiting through backend errors
    /// (past it, a live backend would have let the lock go).
    pub(crate) lock_expire: Duration,
    /// How long a computed value is fresh (`expire`).
    pub(crate) expire: Duration,
    /// Whether concurrent misses in this process wait for one leader.
    pub(crate) coalesce: bool,
    pub(crate) freshness: FreshPolicy,
}

/// How stored values are judged fresh, stale or expired.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FreshPolicy {
    /// How long past its freshness a value may be served while it is refreshed.
    pub(crate) stale_ms: u64,
    /// `XFetch`'s β (0: no early refresh).
    pub(crate) beta: f64,
    /// How long the lock is kept after a failed refresh, so the fleet waits that long
    /// before trying again.
    pub(crate) fail_safe: Duration,
    /// After a refresh found the key's lock held elsewhere (or the backend failing),
    /// how long this process starts no other refresh of the key (the lock's `retry`).
    pub(crate) back_off: Duration,
    /// No `stale`, no `beta`: a value is fresh for as long as the backend keeps it,
    /// and the driver need not read the clock (it gives 0 as the time).
    pub(crate) ttl_only: bool,
    /// The most a value's lifetimes are shortened by (`jitter`, a fraction): its
    /// stale window in the backend is at least `stale_ms * (1 - jitter)`.
    pub(crate) jitter: f64,
}

/// How long a computed value is fresh and how long it is stored (`expire`, and
/// `expire + stale`, both shortened by one draw of `jitter`), decided when the
/// computation starts; its stamp is `fresh` from the time it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Life {
    pub(crate) fresh: Duration,
    pub(crate) ttl: Duration,
    /// The mix of its tags' epochs to record (0: untagged); `None`: an epoch was
    /// missing, so the value is not stored (an invalidation raced its read).
    pub(crate) tags: Option<u64>,
}

/// What a call knows of its tags' epochs (see `crate::tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epochs {
    /// The call has no tags.
    Untagged,
    /// Not read yet: no value can be judged.
    Unread,
    /// Read (with the value, or before computing), mixed.
    Mixed(u64),
    /// An epoch was missing even after it was created (deleted again meanwhile): no
    /// value is this call's, and nothing is stored.
    Missing,
}

impl Epochs {
    /// The mix values are judged and written with: 0 untagged; `None` when unknown.
    fn mix(self) -> Option<u64> {
        match self {
            Self::Untagged => Some(0),
            Self::Mixed(mix) => Some(mix),
            Self::Unread | Self::Missing => None,
        }
    }
}

/// A lock a step takes: its key and how long it lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockSpec<'m> {
    pub(crate) key: &'m str,
    pub(crate) expire: Duration,
}

impl FreshPolicy {
    /// Freshness is the backend's TTL alone (no stale serving, no early refresh).
    pub(crate) const TTL_ONLY: Self = Self {
        stale_ms: 0,
        beta: 0.0,
        fail_safe: Duration::ZERO,
        back_off: Duration::ZERO,
        ttl_only: true,
        jitter: 0.0,
    };
}

/// How a call came by the value it returns without computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Read from the backend, without waiting.
    Read,
    /// Read after waiting for another caller's lock (its computation).
    Wait,
    /// From this process's leader (coalesced in-process).
    Leader,
}

/// The judgement of a value found: returned as it is, or returned and revalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fresh: return it.
    Fresh,
    /// Fresh, but `XFetch` drew an early refresh: return it and refresh.
    Early,
    /// Past its freshness, within `stale`: return it and refresh.
    Stale,
    /// Stale or drawn early, but this process is refreshing the key already: return it.
    Underway,
}

/// How the lock is waited for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockPolicy {
    pub(crate) wait: Wait,
    /// The pause between attempts, before 0–25 % jitter.
    pub(crate) retry: Duration,
}

/// The next thing a driver does.
pub(crate) enum Step<'m, T> {
    /// Backend or in-process I/O; its outcome is the next [`Event`].
    Io(Io<'m>),
    /// Done: return this stored value, and refresh it if its `verdict` says so.
    Hit(Found<T>),
    /// Done without computing: a refresh found the value refreshed, another caller
    /// refreshing (or throttling), or the backend failing; the stale value stands. In
    /// the last two cases this process starts no refresh of the key for `back_off`.
    Skip {
        note: Option<Note>,
        back_off: Option<Duration>,
    },
    /// Compute the value, then report [`Event::Computed`] (its encoding, stamped with
    /// `life.fresh`); `note` says why, when it is worth reporting.
    Compute {
        store: Storing,
        note: Option<Note>,
        life: Life,
    },
    /// Done: return the computed value; `landing` is its encoding, for followers.
    Finished {
        note: Option<Note>,
        landing: Option<Vec<u8>>,
    },
}

/// The I/O steps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Io<'m> {
    /// Read the value: [`Event::Read`].
    Get,
    /// Read a tagged value with its tags' epochs (creating missing ones):
    /// [`Event::ReadTagged`].
    GetTagged,
    /// Read (and create missing) tags' epochs before computing: [`Event::Tags`].
    ReadTags,
    /// Ask the backend for a decoded value it kept (`keep_decoded`), one this test
    /// says was read as this call reads (its type, with the call's codec and version):
    /// [`Event::Kept`].
    GetKept(fn(&KeptValue, Codec, u32) -> bool),
    /// Join this process's flight for the key: [`Event::Joined`].
    Join,
    /// Wait for this process's leader, at most `max` (the lock timeout):
    /// [`Event::Landed`].
    AwaitLeader { max: Option<Duration> },
    /// Claim this process's refresh of the key (at most one in flight):
    /// [`Event::Claimed`].
    ClaimRefresh,
    /// Read the value or take the lock, atomically: [`Event::Attempted`].
    GetOrLock(LockSpec<'m>),
    /// Take the lock without reading (the stored value is unwanted): [`Event::Attempted`].
    TakeLock(LockSpec<'m>),
    /// Wait until the lock at `lock_key` may have been released since `since`, at
    /// most `max`: [`Event::Paused`], with the value the release delivered, if any.
    Pause {
        lock_key: &'m str,
        since: Instant,
        max: Duration,
    },
    /// Store these bytes for `ttl` and release the lock, in one step: [`Event::Stored`].
    StoreAndRelease { bytes: &'m [u8], ttl: Duration },
    /// Release the lock, storing nothing: [`Event::Stored`].
    Release,
    /// Read the value and the key's throttle mark (at `mark_key`), under the lock a
    /// refresh took: [`Event::Rechecked`].
    Recheck { mark_key: &'m str },
    /// Leave the key's throttle mark (the fleet's fail-safe throttle after a failed
    /// refresh) at `mark_key` for `ttl`, then release the lock: [`Event::Stored`].
    Throttle {
        mark_key: &'m str,
        ttl: Duration,
        mark: Mark,
    },
}

/// The longest a waiter the backend wakes at the release pauses between two checks of
/// the lock (unless `retry` is longer): the bound on what a subscription lost without a
/// word costs.
pub(crate) const WATCHED_CHECK: Duration = Duration::from_secs(1);

/// How long before the value it throttles a throttle mark ends, at the latest.
const MARK_MARGIN_MS: u64 = 20;

/// The fail-safe throttle's mark: refreshes of the value fresh until `of_ms` back off
/// until `until_ms` (wall clock). It throttles that value only: a newer value's first
/// refresh is never held back by an older value's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) until_ms: u64,
    /// The `fresh_until_ms` of the value whose refresh failed (0: any value).
    pub(crate) of_ms: u64,
}

impl Mark {
    /// The mark as stored.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.until_ms.to_le_bytes());
        bytes[8..].copy_from_slice(&self.of_ms.to_le_bytes());
        bytes
    }

    /// A stored mark; anything else (foreign bytes) is none.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes = <[u8; 16]>::try_from(bytes).ok()?;
        let (until, of) = bytes.split_at(8);
        Some(Self {
            until_ms: u64::from_le_bytes(until.try_into().ok()?),
            of_ms: u64::from_le_bytes(of.try_into().ok()?),
        })
    }
}

impl Io<'_> {
    /// Whether this step can find or store the value a flight lands (a read, an
    /// attempt at the lock, a store): the steps that order a leader's value against
    /// its followers (see `coalesce`). Joining, claiming, waiting and releasing prove
    /// nothing; counting them would let a follower that joined after the proving read
    /// take its value.
    pub(crate) fn proves(&self) -> bool {
        matches!(
            self,
            Self::Get
                | Self::GetTagged
                | Self::GetOrLock(_)
                | Self::TakeLock(_)
                | Self::Recheck { .. }
                | Self::StoreAndRelease { .. }
        )
    }
}

/// What a refresh read again under the lock.
#[derive(Debug, Default)]
pub(crate) struct Recheck {
    /// The value.
    pub(crate) value: Option<Vec<u8>>,
    /// The throttle mark a refresh that failed elsewhere left, if any.
    pub(crate) mark: Option<Mark>,
}

impl Recheck {
    /// The reply to `[value key, throttle mark key]`; a mark that is not ours is none.
    pub(crate) fn of(read: Vec<Option<Vec<u8>>>) -> Self {
        let mut read = read.into_iter();
        let value = read.next().flatten();
        let mark = read
            .next()
            .flatten()
            .and_then(|mark| Mark::from_bytes(&mark));
        Self { value, mark }
    }
}

/// A backend's error as the machine hears of it: boxed, so that the events and steps
/// that may carry one stay small (they are moved on every call; the error is rare).
pub(crate) type Failure = Box<Error>;

/// What an I/O step found, fed back with [`Machine::on`].
pub(crate) enum Event {
    /// The first event of a call.
    Start,
    Read(Result<Option<Vec<u8>>, Failure>),
    /// What [`Io::GetTagged`] read: the value, and its tags' epochs mixed (`None`: one
    /// missing).
    ReadTagged(Result<(Option<Vec<u8>>, Option<u64>), Failure>),
    /// What [`Io::ReadTags`] read: the tags' epochs mixed (`None`: one missing).
    Tags(Result<Option<u64>, Failure>),
    /// What [`Io::GetKept`] found: a decoded value the backend kept, if any.
    Kept(Option<DecodedValue>),
    /// What [`Io::Recheck`] read.
    Rechecked(Result<Recheck, Failure>),
    Joined(Role),
    /// Whether this call claimed the key's refresh in this process.
    Claimed(bool),
    /// How the wait for this process's leader ended.
    Landed(Landed),
    /// An attempt at the lock that started `at` (or, when it failed, that failed
    /// then). `watched`: the lock was found held, the backend will wake this call at
    /// its release ([`Reply::Watched`](crate::backend::Reply::Watched)), and it
    /// expires in this long: the pause lasts until then, not `retry`.
    Attempted {
        at: Instant,
        found: Result<GetOrLock, Failure>,
        watched: Option<Duration>,
    },
    /// A pause ended; with the value the release delivered, if the backend delivered
    /// one (stored by the holder this call's last attempt, or a later one, found).
    Paused(Option<Vec<u8>>),
    /// The computation's encoded value, or `None` (it returned `Err`, or the value
    /// does not encode).
    Computed(Option<Vec<u8>>),
    /// Whether a store or release still found the lock ours (`true` for unlocked
    /// stores).
    Stored(Result<bool, Failure>),
}

/// A caller's part in this process's flight for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Lead,
    Follow,
}

/// Where a computed value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storing {
    /// Nowhere: the backend failed (fail open), or the lock was not obtained.
    Nothing,
    /// Stored under the lock this call holds, which is released in the same step.
    Locked,
}

/// Something a driver reports through `tracing`.
#[derive(Debug)]
pub(crate) enum Note {
    /// The backend failed before the computation: computing without it.
    FailOpen(Failure),
    /// The lock stayed held for the whole timeout: computing without it.
    LockTimeout { waited: Duration },
    /// The lock was held and the lock does not block: computing without it.
    LockBusy,
    /// No lock is configured and another caller holds it (computing this key):
    /// computing too, without storing.
    Concurrent,
    /// Storing or releasing failed.
    StoreFailed(Failure),
    /// The lock had expired, been taken by a later holder, or been voided by an
    /// invalidation when the value was to be stored: it was not stored.
    LockLost,
    /// A refresh failed (the computation's `Err` or panic, or the backend's error):
    /// the stale value is served until the fail-safe throttle lets a caller retry.
    RevalidationFailed(Option<Failure>),
}

#[derive(Debug)]
enum State {
    Start,
    Reading,
    Joining,
    Following,
    /// A value to serve and refresh was found; the refresh is claimed in-process.
    Claiming,
    /// An attempt at the lock is out; the wait for it began at `since`.
    Attempting {
        since: Option<Instant>,
    },
    Pausing {
        since: Instant,
    },
    /// The lock was not obtained; the value is read once more before computing.
    Rereading(Box<Note>),
    /// A tagged call that holds the lock reads its tags' epochs before computing.
    ReadingTags(Option<Box<Note>>),
    /// A tagged refresh that took its lock reads its tags' epochs before the recheck:
    /// the value read under the lock is judged (refreshed elsewhere? throttled?) as
    /// this call reads it.
    ReadingTagsToRecheck,
    /// A refresh holds its lock and reads the value again: another refresher may have
    /// finished since this caller found it stale.
    Rechecking,
    /// A refresh found the value refreshed already (or refreshes throttled) and gives
    /// its lock back; then it backs off for this long.
    Relinquishing(Option<Duration>),
    Computing(Storing),
    Storing,
    Done,
}

/// Whether a value with `stamp` may be served at `now_ms`: fresh, or stale within
/// `stale_ms` past its freshness.
pub(crate) fn servable(stamp: Stamp, stale_ms: u64, now_ms: u64) -> bool {
    now_ms < stamp.fresh_until_ms.saturating_add(stale_ms)
}

/// Reads stored bytes as a call's value: a decoding function and the user's version
/// (a plain function, so a hit allocates nothing for it).
/// Reads stored bytes as a call's value: a decoding function and the user's version
/// (a plain function, so a hit allocates nothing for it).
pub(crate) struct Decoder<T> {
    pub(crate) decode: DecodeFn<T>,
    pub(crate) codec: Codec,
    pub(crate) version: u32,
    /// With `keep_decoded`: how decoded values are kept and taken back.
    pub(crate) share: Option<Share<T>>,
}

/// Reads stored bytes (written with a codec, under a user version) as a value and its
/// stamp.
/// The last argument is the mix of the tags' epochs the reader holds (0: untagged).
pub(crate) type DecodeFn<T> = fn(Codec, &[u8], u32, u64) -> Option<(T, Stamp)>;

/// A value found: the one shape of a hit, whether read, kept decoded, waited for or
/// taken from this process's leader.
pub(crate) struct Found<T> {
    pub(crate) value: T,
    /// Its encoding, for in-process followers (absent when it came decoded: kept, or
    /// from a leader).
    pub(crate) bytes: Option<Vec<u8>>,
    /// Whether it is returned as it is, or returned and refreshed.
    pub(crate) verdict: Verdict,
    pub(crate) via: Via,
    /// Its stamp (a refresh computes only while it is stored).
    pub(crate) stamp: Stamp,
    /// With `keep_decoded`, for a fresh value read as bytes: whether to keep it decoded
    /// beside them (as the machine's [`share`](Machine::share) says, with the call's
    /// codec and version). A flag, not the `Share`: a hit's step stays smaller.
    pub(crate) keep: bool,
}

/// One memoized call's sequence.
pub(crate) struct Machine<'k, T> {
    policy: Policy,
    decoder: Decoder<T>,
    /// The call's key, which the keys of its lock and throttle mark are named after
    /// (each made when first needed: a hit makes neither).
    key: &'k CacheKey,
    lock_key: OnceCell<String>,
    mark_key: OnceCell<String>,
    rng: Option<fastrand::Rng>,
    state: State,
    /// The time of the event being handled (wall clock, ms since the Unix epoch).
    now_ms: u64,
    /// A value to refresh, while this process's refresh of it is claimed.
    claiming: Option<Found<T>>,
    /// For a refresh: the stamp of the value whose staleness triggered it.
    trigger: Option<Stamp>,
    /// The life of the value being computed (its TTL once stored).
    life: Option<Life>,
    /// The computed value's encoding, while it is stored.
    encoded: Option<Vec<u8>>,
    /// A refresh whose computation failed is holding the lock for the throttle.
    refresh_failed: bool,
    /// When the lock attempts of a waiter began failing (`None`: the last succeeded).
    erring_since: Option<Instant>,
    /// What the call knows of its tags' epochs.
    epochs: Epochs,
}

impl<'k, T> Machine<'k, T> {
    pub(crate) fn new(
        policy: Policy,
        decoder: Decoder<T>,
        key: &'k CacheKey,
        rng: Option<fastrand::Rng>,
    ) -> Self {
        Self {
            policy,
            decoder,
            key,
            lock_key: OnceCell::new(),
            mark_key: OnceCell::new(),
            rng,
            state: State::Start,
            now_ms: 0,
            claiming: None,
            trigger: None,
            life: None,
            encoded: None,
            refresh_failed: false,
            erring_since: None,
            epochs: Epochs::Untagged,
        }
    }

    /// This sequence for a call with tags: values are read with their tags' epochs, and
    /// judged and written under them (never kept decoded: a near copy of the decoded
    /// value would not see an epoch move).
    #[must_use]
    pub(crate) fn tagged(mut self, tagged: bool) -> Self {
        if tagged {
            self.epochs = Epochs::Unread;
            self.decoder.share = None;
        }
        self
    }

    /// The read of the value this call makes.
    fn get(&self) -> Io<'static> {
        match self.epochs {
            Epochs::Untagged => Io::Get,
            _ => Io::GetTagged,
        }
    }

    /// The machine's random numbers, drawn from this thread's generator when first
    /// needed (a hit without `beta` draws none).
    fn rng(&mut self) -> &mut fastrand::Rng {
        self.rng.get_or_insert_with(fastrand::Rng::new)
    }

    /// Makes this (`Refresh::Revalidate`) sequence the refresh of a value found with
    /// `stamp`: under the key's lock it computes only if that value is still stored.
    pub(crate) fn revalidating(mut self, stamp: Stamp) -> Self {
        self.trigger = Some(stamp);
        self
    }

    /// With `keep_decoded`: how this call's values are kept decoded.
    pub(crate) fn share(&self) -> Option<Share<T>> {
        self.decoder.share
    }

    /// Whether the times given with events matter: without `stale` or `beta`, a value
    /// is fresh for as long as it is stored, and a driver need not read the clock.
    pub(crate) fn reads_clock(&self) -> bool {
        !self.policy.freshness.ttl_only
    }

    fn decode(&self, bytes: &[u8]) -> Option<(T, Stamp)> {
        let tags = self.epochs.mix()?;
        (self.decoder.decode)(self.decoder.codec, bytes, self.decoder.version, tags)
    }

    /// The key's lock, as the next attempt takes it.
    fn lock(&self) -> LockSpec<'_> {
        LockSpec {
            key: self.lock_key.get_or_init(|| self.key.lock_key()),
            expire: self.policy.lock_expire,
        }
    }

    fn mark_key(&self) -> &str {
        self.mark_key.get_or_init(|| self.key.refresh_key())
    }

    /// Whether a value with `stamp` is returned as it is, returned and refreshed, or
    /// (`None`) too old to return at all: a miss.
    fn judge(&mut self, stamp: Stamp) -> Option<Verdict> {
        let (now, until) = (self.now_ms, stamp.fresh_until_ms);
        let fresh = self.policy.freshness;
        if fresh.ttl_only {
            return Some(Verdict::Fresh);
        }
        if now >= until {
            let servable = fresh.stale_ms > 0 && servable(stamp, fresh.stale_ms, now);
            return servable.then_some(Verdict::Stale);
        }
        if fresh.beta > 0.0 {
            // `XFetch`: refresh when now − δ·β·ln(r) ≥ expiry, r uniform in (0, 1].
            let draw = 1.0 - self.rng().f64();
            let ahead = f64::from(stamp.compute_ms) * fresh.beta * -draw.ln();
            #[allow(clippy::cast_precision_loss)] // milliseconds: exact far beyond any date
            if now as f64 + ahead >= until as f64 {
                return Some(Verdict::Early);
            }
        }
        Some(Verdict::Fresh)
    }

    /// A value found (`bytes` read, or `kept` decoded): a hit (perhaps to refresh), or
    /// `None` when it is not this call's value or too old to serve.
    // On every hit: inlined, the value is built where it is returned (measured: 55
    // instructions a hit fewer under callgrind than with the compiler's choice).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn found(
        &mut self,
        value: T,
        stamp: Stamp,
        bytes: Option<Vec<u8>>,
        via: Via,
    ) -> Option<Found<T>> {
        let verdict = self.judge(stamp)?;
        let keep = self.decoder.share.is_some()
            && matches!((&bytes, verdict, via), (Some(_), Verdict::Fresh, Via::Read));
        Some(Found {
            value,
            bytes,
            verdict,
            via,
            stamp,
            keep,
        })
    }

    /// Bytes found: see [`found`](Self::found).
    // On every hit: inlined, the value is built where it is returned (measured: 55
    // instructions a hit fewer under callgrind than with the compiler's choice).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn found_bytes(&mut self, bytes: Vec<u8>, via: Via) -> Option<Found<T>> {
        let (value, stamp) = self.decode(&bytes)?;
        self.found(value, stamp, Some(bytes), via)
    }

    /// Returns a value found; one to refresh first claims this process's refresh of
    /// the key, so that a process starts one refresh of it at a time.
    // On every hit: inlined, the value is built where it is returned (measured: 55
    // instructions a hit fewer under callgrind than with the compiler's choice).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn hit(&mut self, found: Found<T>) -> Step<'_, T> {
        if found.verdict == Verdict::Fresh {
            return Step::Hit(found);
        }
        self.claiming = Some(found);
        self.state = State::Claiming;
        Step::Io(Io::ClaimRefresh)
    }

    fn claimed(&mut self, claimed: bool) -> Step<'_, T> {
        match self.claiming.take() {
            Some(found) if claimed => Step::Hit(found),
            Some(found) => Step::Hit(Found {
                verdict: Verdict::Underway,
                ..found
            }),
            None => self.compute(Storing::Nothing, None),
        }
    }

    /// A decoded value the backend kept, judged as the bytes it came from would be;
    /// one not read as this call reads (another type, codec or version), or none: the
    /// bytes are read.
    fn kept(&mut self, kept: Option<DecodedValue>) -> Step<'_, T> {
        let taken = match (kept, self.decoder.share) {
            (Some(kept), Some(share)) => {
                share.take(&*kept, self.decoder.codec, self.decoder.version)
            }
            _ => None,
        };
        let Some((value, stamp)) = taken else {
            self.state = State::Reading;
            return Step::Io(Io::Get);
        };
        match self.found(value, stamp, None, Via::Read) {
            Some(found) => self.hit(found),
            None => self.read(Ok(None), None),
        }
    }

    /// Feeds `event` (the outcome of the last step), which came at `now_ms` (wall
    /// clock, ms since the Unix epoch: what is found is judged at the time it is
    /// found, not when the call began), and returns the next step.
    ///
    /// The two events of every hit (the call's start, and an untagged read) are
    /// taken here, inline in the driver's loop, as [`on_event`](Self::on_event)'s arms
    /// take them; every other event by `on_event`, a call of its own.
    #[inline]
    pub(crate) fn on(&mut self, now_ms: u64, event: Event) -> Step<'_, T> {
        self.now_ms = now_ms;
        match event {
            start @ Event::Start => {
                // Moved out and forgotten: it holds nothing, and the event's drop glue
                // (a call, on every hit) is not run for it.
                std::mem::forget(start);
                match std::mem::replace(&mut self.state, State::Done) {
                    State::Start => self.start(),
                    state => self.unexpected(state),
                }
            }
            Event::Read(read) => match std::mem::replace(&mut self.state, State::Done) {
                State::Reading if self.epochs == Epochs::Untagged => self.read(read, None),
                State::Reading => self.on_state(Event::Read(read), State::Reading),
                state => self.on_state(Event::Read(read), state),
            },
            event => self.on_event(event),
        }
    }

    /// [`on_event`](Self::on_event) for a state already taken.
    #[inline(never)]
    fn on_state(&mut self, event: Event, state: State) -> Step<'_, T> {
        self.state = state;
        self.on_event(event)
    }

    /// [`on`](Self::on) for every event: matched on the event, then on the state.
    #[inline(never)]
    fn on_event(&mut self, event: Event) -> Step<'_, T> {
        let state = std::mem::replace(&mut self.state, State::Done);
        // Matched on the event, then on the state: each arm consumes what it binds
        // (no tuple of both to take apart and drop what is left of: this runs twice
        // on every hit).
        match event {
            Event::Start => match state {
                State::Start => self.start(),
                state => self.unexpected(state),
            },
            Event::Kept(kept) => match state {
                State::Reading => self.kept(kept),
                state => self.unexpected(state),
            },
            // A tagged call reads its value with its tags (a batch's first read has
            // none: read again).
            Event::Read(_) if self.epochs != Epochs::Untagged => match state {
                state @ (State::Reading | State::Rereading(_)) => {
                    self.state = state;
                    Step::Io(Io::GetTagged)
                }
                state => self.unexpected(state),
            },
            Event::Read(read) => match state {
                State::Reading => self.read(read, None),
                State::Rereading(note) => self.read(read, Some(*note)),
                state => self.unexpected(state),
            },
            Event::ReadTagged(read) => {
                let read = read.map(|(bytes, mix)| {
                    self.epochs = mix.map_or(Epochs::Missing, Epochs::Mixed);
                    bytes
                });
                match state {
                    State::Reading => self.read(read, None),
                    State::Rereading(note) => self.read(read, Some(*note)),
                    state => self.unexpected(state),
                }
            }
            Event::Tags(read) => match state {
                State::ReadingTags(note) => self.tags_read(read, note.map(|note| *note)),
                State::ReadingTagsToRecheck => {
                    self.epochs = match read {
                        Ok(Some(mix)) => Epochs::Mixed(mix),
                        Ok(None) | Err(_) => Epochs::Missing,
                    };
                    self.recheck()
                }
                state => self.unexpected(state),
            },
            Event::Joined(role) => match (state, role) {
                (State::Joining, Role::Lead) => self.attempt(None, Attempt::GetOrLock),
                (State::Joining, Role::Follow) => {
                    self.state = State::Following;
                    let max = match self.policy.lock.map(|lock| lock.wait) {
                        Some(Wait::For(limit)) => Some(limit),
                        _ => None,
                    };
                    Step::Io(Io::AwaitLeader { max })
                }
                (state, _) => self.unexpected(state),
            },
            Event::Landed(landed) => match state {
                State::Following => self.landed(landed),
                state => self.unexpected(state),
            },
            Event::Attempted { at, found, watched } => match state {
                State::Attempting { since } => self.attempted(since, at, found, watched),
                state => self.unexpected(state),
            },
            Event::Paused(delivered) => match state {
                State::Pausing { since } => {
                    let attempt = self.waiters_attempt();
                    // A value the release delivered is judged as a read after the wait
                    // (judged now, as any value found); a forced refresh wants the lock,
                    // and one that is not this call's value (or too old) is attempted
                    // for as before.
                    let delivered = match (attempt, delivered) {
                        (Attempt::GetOrLock, Some(bytes)) => self.found_bytes(bytes, Via::Wait),
                        _ => None,
                    };
                    if let Some(found) = delivered {
                        return self.hit(found);
                    }
                    self.attempt(Some(since), attempt)
                }
                state => self.unexpected(state),
            },
            Event::Claimed(claimed) => match state {
                State::Claiming => self.claimed(claimed),
                state => self.unexpected(state),
            },
            Event::Rechecked(read) => match state {
                State::Rechecking => self.rechecked(read),
                state => self.unexpected(state),
            },
            Event::Computed(encoded) => match state {
                State::Computing(store) => self.computed(store, encoded),
                state => self.unexpected(state),
            },
            Event::Stored(stored) => match state {
                State::Relinquishing(back_off) => Step::Skip {
                    note: None,
                    back_off,
                },
                State::Storing => self.stored(stored),
                state => self.unexpected(state),
            },
        }
    }

    /// An event that is not the last step's: a driver feeds each step's own event, so
    /// this is a driver bug, answered by the safe end: compute, store nothing.
    #[cold]
    fn unexpected(&mut self, state: State) -> Step<'_, T> {
        drop(state);
        self.compute(Storing::Nothing, None)
    }

    /// How the wait for this process's leader ended.
    fn landed(&mut self, landed: Landed) -> Step<'_, T> {
        if let Landed::TimedOut = landed {
            let waited = match self.policy.lock.map(|lock| lock.wait) {
                Some(Wait::For(limit)) => limit,
                _ => Duration::ZERO,
            };
            return self.missed(Note::LockTimeout { waited });
        }
        let landing = match landed {
            Landed::Value(bytes) => Some(bytes),
            Landed::Abandoned | Landed::TimedOut => None,
        };
        match landing.as_deref().and_then(|bytes| self.decode(bytes)) {
            Some((value, stamp)) => Step::Hit(Found {
                value,
                bytes: None,
                verdict: Verdict::Fresh,
                via: Via::Leader,
                stamp,
                keep: false,
            }),
            // The leader stored nothing to share: run the sequence again.
            None => self.join(),
        }
    }

    /// What a store (or the release after a failed refresh) came to.
    fn stored(&mut self, stored: Result<bool, Failure>) -> Step<'_, T> {
        let note = match stored {
            _ if self.refresh_failed => Some(Note::RevalidationFailed(stored.err())),
            Ok(true) => None,
            Ok(false) => Some(Note::LockLost),
            Err(err) => Some(Note::StoreFailed(err)),
        };
        // Only a value the backend accepted goes to followers. One it refused (the lock
        // was lost: a later holder, or an invalidation), or that it may not have stored
        // (an error), is this caller's alone: followers that joined after an
        // invalidation must not get a value computed before it. They run the sequence
        // again.
        let landing = if note.is_none() {
            self.encoded.take()
        } else {
            None
        };
        Step::Finished { note, landing }
    }

    fn start(&mut self) -> Step<'_, T> {
        match (self.policy.refresh, self.decoder.share) {
            (Refresh::IfMissing, share) => {
                // The state replaced is `Done` (`on` took it): it holds nothing, and
                // is not handed to the drop glue (a call on every hit).
                let done = std::mem::replace(&mut self.state, State::Reading);
                debug_assert!(matches!(done, State::Done));
                std::mem::forget(done);
                Step::Io(share.map_or(self.get(), |share| Io::GetKept(share.accepts())))
            }
            // Even without a configured lock, a store is made under the lock (taken
            // without waiting), so that every store is fenced.
            (Refresh::Forced | Refresh::Revalidate, _) => self.attempt(None, Attempt::TakeLock),
        }
    }

    /// A read of the value, first or after the lock was not obtained (`missed`).
    // Inline: a hit's read is judged where the driver loops; what follows a miss (or
    // a failure) is a call of its own.
    #[inline]
    fn read(
        &mut self,
        read: Result<Option<Vec<u8>>, Failure>,
        missed: Option<Note>,
    ) -> Step<'_, T> {
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(err) => return self.read_failed(err, missed),
        };
        let via = if missed.is_some() {
            Via::Wait
        } else {
            Via::Read
        };
        if let Some(found) = bytes.and_then(|bytes| self.found_bytes(bytes, via)) {
            return self.hit(found);
        }
        self.missed_read(missed)
    }

    /// A read that failed: fail open.
    #[cold]
    #[inline(never)]
    fn read_failed(&mut self, err: Failure, missed: Option<Note>) -> Step<'_, T> {
        drop(missed);
        self.compute(Storing::Nothing, Some(Note::FailOpen(err)))
    }

    /// A read that found no value of this call's (nothing, or bytes that are not
    /// this call's value: a miss, overwritten).
    #[inline(never)]
    fn missed_read(&mut self, missed: Option<Note>) -> Step<'_, T> {
        match (missed, self.policy.lock) {
            // Computed without the lock: returned, never stored (the holder stores).
            (Some(note), _) => self.compute(Storing::Nothing, Some(note)),
            // A caller that never waits for the lock never waits for a leader either.
            (None, Some(lock)) if self.policy.coalesce && lock.wait != Wait::Never => self.join(),
            // No lock configured, or no waiting: take it if free, never wait for it.
            (None, _) => self.attempt(None, Attempt::GetOrLock),
        }
    }

    /// A tagged call holding the lock read its tags' epochs: it computes, and stores
    /// under them (with none to record, one deleted meanwhile or the read failed, the
    /// value is computed and the lock released).
    fn tags_read(&mut self, read: Result<Option<u64>, Failure>, note: Option<Note>) -> Step<'_, T> {
        match read {
            Ok(mix) => {
                self.epochs = mix.map_or(Epochs::Missing, Epochs::Mixed);
                self.compute(Storing::Locked, note)
            }
            Err(err) => {
                self.epochs = Epochs::Missing;
                self.compute(Storing::Locked, note.or(Some(Note::FailOpen(err))))
            }
        }
    }

    fn join(&mut self) -> Step<'_, T> {
        self.state = State::Joining;
        Step::Io(Io::Join)
    }

    /// The lock attempt a waiter makes: a forced refresh never reads the value.
    fn waiters_attempt(&self) -> Attempt {
        match self.policy.refresh {
            Refresh::IfMissing => Attempt::GetOrLock,
            Refresh::Forced | Refresh::Revalidate => Attempt::TakeLock,
        }
    }

    fn attempt(&mut self, since: Option<Instant>, attempt: Attempt) -> Step<'_, T> {
        self.state = State::Attempting { since };
        let lock = self.lock();
        Step::Io(match attempt {
            Attempt::GetOrLock => Io::GetOrLock(lock),
            Attempt::TakeLock => Io::TakeLock(lock),
        })
    }

    fn attempted(
        &mut self,
        since: Option<Instant>,
        at: Instant,
        found: Result<GetOrLock, Failure>,
        watched: Option<Duration>,
    ) -> Step<'_, T> {
        if found.is_ok() {
            self.erring_since = None;
        }
        match found {
            Err(err) if self.policy.refresh == Refresh::Revalidate => {
                self.refresh_skipped(Some(Note::RevalidationFailed(Some(err))))
            }
            // Waiting for a holder when the backend failed (its primary died, a link
            // was cut): keep waiting rather than compute, so that waiters do not each
            // compute; once the backend answers again (a replica promoted), they find
            // the value, the lock, or (lost in the failover) no lock, which one of them
            // takes. Within the wait's limit, and for at most the lock's expiry.
            Err(err) => match since {
                Some(since) if self.rides_out(at) => self.held(since, at, None),
                _ => self.compute(Storing::Nothing, Some(Note::FailOpen(err))),
            },
            Ok(GetOrLock::Locked { .. }) if self.policy.refresh == Refresh::Revalidate => {
                if self.epochs == Epochs::Unread {
                    self.state = State::ReadingTagsToRecheck;
                    return Step::Io(Io::ReadTags);
                }
                self.recheck()
            }
            Ok(GetOrLock::Locked { .. }) => self.compute(Storing::Locked, None),
            Ok(GetOrLock::Value(bytes)) => {
                let via = if since.is_some() {
                    Via::Wait
                } else {
                    Via::Read
                };
                match self.found_bytes(bytes, via) {
                    Some(found) => self.hit(found),
                    // Not this call's value, or too old: take the lock and overwrite it.
                    None => self.attempt(since, Attempt::TakeLock),
                }
            }
            // Another caller is refreshing (or throttling after a failed refresh).
            Ok(GetOrLock::Held) if self.policy.refresh == Refresh::Revalidate => {
                self.refresh_skipped(None)
            }
            Ok(GetOrLock::Held) => self.held(since.unwrap_or(at), at, watched),
        }
    }

    /// Whether a waiter whose attempt at `at` failed keeps waiting: it may wait, and
    /// its attempts have been failing for less than the lock's expiry.
    fn rides_out(&mut self, at: Instant) -> bool {
        let Some(lock) = self.policy.lock else {
            return false;
        };
        if lock.wait == Wait::Never {
            return false;
        }
        let first = *self.erring_since.get_or_insert(at);
        at.saturating_duration_since(first) < self.policy.lock_expire
    }

    /// The lock is held by another caller: wait for it, or give up on it. A waiter
    /// the backend wakes at the release (`watched`: the lock's remaining life) pauses
    /// until the release or the lock's expiry (a dead holder's lock is taken over
    /// then), at most [`WATCHED_CHECK`] (or `retry`, if longer), plus 0–25 % of `retry`
    /// or of that pause if shorter (waiters on a dead holder do not all retry at once);
    /// any other polls at `retry`, plus 0–25 %.
    fn held(&mut self, since: Instant, at: Instant, watched: Option<Duration>) -> Step<'_, T> {
        let Some(lock) = self.policy.lock else {
            // No lock configured: another caller computing is no reason to wait.
            return self.missed(Note::Concurrent);
        };
        let waited = at.saturating_duration_since(since);
        // 0–25 % jitter; a retry too large to scale is used as it is.
        let jitter = self.rng().f64() * 0.25;
        let pause = match watched {
            Some(expires_in) => {
                // At most `WATCHED_CHECK` (or `retry` if longer) between checks: a
                // subscription whose connection died without a word (half-open TCP)
                // then costs that, not the rest of the lock's life.
                let until = expires_in.min(WATCHED_CHECK.max(lock.retry));
                let spread = lock.retry.min(until).as_secs_f64() * jitter;
                until.saturating_add(Duration::from_secs_f64(spread))
            }
            None => Duration::try_from_secs_f64(lock.retry.as_secs_f64() * (1.0 + jitter))
                .unwrap_or(lock.retry),
        };
        let max = match lock.wait {
            Wait::Never => return self.missed(Note::LockBusy),
            Wait::For(limit) if waited >= limit => {
                return self.missed(Note::LockTimeout { waited });
            }
            Wait::For(limit) => pause.min(limit.saturating_sub(waited)),
            Wait::Forever => pause,
        };
        self.state = State::Pausing { since };
        Step::Io(Io::Pause {
            lock_key: self.lock().key,
            since: at,
            max,
        })
    }

    /// The lock was not obtained: read once more (the holder may have stored the
    /// value meanwhile), then compute without the lock, and store nothing: a store
    /// outside the lock could not be fenced (it could land after an invalidation, or
    /// over a newer value); the holder stores.
    fn missed(&mut self, note: Note) -> Step<'_, T> {
        if self.policy.refresh == Refresh::Forced {
            return self.compute(Storing::Nothing, Some(note));
        }
        self.state = State::Rereading(Box::new(note));
        Step::Io(self.get())
    }

    /// A refresh holding its lock reads the value and the throttle mark again.
    fn recheck(&mut self) -> Step<'_, T> {
        self.state = State::Rechecking;
        Step::Io(Io::Recheck {
            mark_key: self.mark_key(),
        })
    }

    /// A refresh holding its lock read the value again: refresh it only if it is still
    /// the value that triggered the refresh (or it is gone, or no longer this call's).
    fn rechecked(&mut self, read: Result<Recheck, Failure>) -> Step<'_, T> {
        let now_ms = self.now_ms;
        match read {
            Err(err) => self.refresh_skipped(Some(Note::RevalidationFailed(Some(err)))),
            // A refresh of this very value failed within `fail_safe`: back off until
            // the mark ends.
            Ok(Recheck {
                mark: Some(mark),
                value,
            }) if mark.until_ms > now_ms && self.marks(mark, value.as_deref()) => {
                let left = Duration::from_millis(mark.until_ms - now_ms)
                    .min(self.policy.freshness.fail_safe)
                    .max(self.policy.freshness.back_off);
                self.state = State::Relinquishing(Some(left));
                Step::Io(Io::Release)
            }
            Ok(Recheck {
                value: Some(bytes), ..
            }) if self.refreshed(&bytes) => {
                self.state = State::Relinquishing(None);
                Step::Io(Io::Release)
            }
            Ok(_) => self.compute(Storing::Locked, None),
        }
    }

    /// Whether `mark` throttles the refresh of `value` (the value read under the lock):
    /// the mark was left by a failed refresh of this very value.
    fn marks(&self, mark: Mark, value: Option<&[u8]>) -> bool {
        if mark.of_ms == 0 {
            return true;
        }
        value
            .and_then(|bytes| self.decode(bytes))
            .is_some_and(|(_, stamp)| stamp.fresh_until_ms == mark.of_ms)
    }

    /// A refresh that cannot run now (the key's lock held elsewhere, or the backend
    /// failing): this process backs off before trying again.
    fn refresh_skipped(&self, note: Option<Note>) -> Step<'_, T> {
        Step::Skip {
            note,
            back_off: Some(self.policy.freshness.back_off),
        }
    }

    /// Whether `bytes`, read under the key's lock, are a value another refresher
    /// stored since this refresh was triggered: another stamp, not yet stale. (Not
    /// judged again: an early refresh's value is still fresh, and drawing again would
    /// undo the draw that triggered it.) Without a trigger, a fresh value is refreshed.
    fn refreshed(&mut self, bytes: &[u8]) -> bool {
        let Some((_, stamp)) = self.decode(bytes) else {
            return false;
        };
        match self.trigger {
            Some(trigger) => stamp != trigger && self.now_ms < stamp.fresh_until_ms,
            None => self.judge(stamp) == Some(Verdict::Fresh),
        }
    }

    /// The mark a failed refresh leaves, and its TTL: `fail_safe`, but never past the
    /// life of the value it throttles (`expire + stale` from its store), so the mark
    /// never outlives it. `None` when that life is over.
    fn throttle(&self) -> Option<(Duration, Mark)> {
        let now_ms = self.now_ms;
        let fail_safe = self.policy.freshness.fail_safe;
        let mut until_ms =
            now_ms.saturating_add(u64::try_from(fail_safe.as_millis()).unwrap_or(u64::MAX));
        let of_ms = self.trigger.map_or(0, |stamp| stamp.fresh_until_ms);
        if let Some(stamp) = self.trigger {
            // The value's TTL ran from its store, just after its stamp was taken; the
            // margin covers the backends' coarse clocks (a tick of 1-4 ms), so the
            // mark ends first.
            // With `jitter`, the value's stale window was shortened by as much.
            let fresh = self.policy.freshness;
            let kept = 1.0 - fresh.jitter.clamp(0.0, 1.0);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let stale_kept_ms = (fresh.stale_ms as f64 * kept) as u64;
            let gone_ms = stamp
                .fresh_until_ms
                .saturating_add(stale_kept_ms)
                .saturating_sub(MARK_MARGIN_MS);
            until_ms = until_ms.min(gone_ms);
        }
        let ttl = Duration::from_millis(until_ms.checked_sub(now_ms).filter(|ms| *ms > 0)?);
        Some((ttl, Mark { until_ms, of_ms }))
    }

    fn compute(&mut self, store: Storing, note: Option<Note>) -> Step<'_, T> {
        // A value stored under the lock records its tags' epochs, read before it is
        // computed (a refresh, or a forced call, has not read them yet).
        if store == Storing::Locked && self.epochs == Epochs::Unread {
            self.state = State::ReadingTags(note.map(Box::new));
            return Step::Io(Io::ReadTags);
        }
        self.state = State::Computing(store);
        let life = self.life();
        self.life = Some(life);
        Step::Compute { store, note, life }
    }

    /// The life of a value computed now: `expire`, and `expire + stale` in the backend,
    /// both shortened by the same random fraction when `jitter` is set.
    fn life(&mut self) -> Life {
        let jitter = self.policy.freshness.jitter;
        let keep = if jitter > 0.0 {
            1.0 - self.rng().f64() * jitter
        } else {
            1.0
        };
        let expire = self.policy.expire;
        let stale = Duration::from_millis(self.policy.freshness.stale_ms);
        Life {
            fresh: shortened(expire, keep),
            ttl: shortened(expire.saturating_add(stale), keep),
            tags: self.epochs.mix(),
        }
    }

    fn computed(&mut self, store: Storing, encoded: Option<Vec<u8>>) -> Step<'_, T> {
        if store == Storing::Nothing {
            self.state = State::Done;
            return Step::Finished {
                note: None,
                landing: encoded,
            };
        }
        self.state = State::Storing;
        self.encoded = encoded;
        let ttl = self.life.map_or(self.policy.expire, |life| life.ttl);
        match (store, self.encoded.as_deref()) {
            (Storing::Locked, Some(bytes)) => Step::Io(Io::StoreAndRelease { bytes, ttl }),
            // A failed refresh leaves the fail-safe throttle's mark: the fleet serves
            // the stale value meanwhile instead of retrying at once. The lock goes
            // back, so a miss never waits for the throttle.
            _ if self.policy.refresh == Refresh::Revalidate => {
                self.refresh_failed = true;
                match self.throttle() {
                    Some((ttl, mark)) => Step::Io(Io::Throttle {
                        mark_key: self.mark_key(),
                        ttl,
                        mark,
                    }),
                    None => Step::Io(Io::Release),
                }
            }
            _ => Step::Io(Io::Release),
        }
    }
}

/// Which attempt at the lock a caller makes.
#[derive(Clone, Copy)]
enum Attempt {
    GetOrLock,
    TakeLock,
}

/// `duration` shortened to the fraction `keep` (at most 1): never longer, and never a
/// panic for durations too large for floating point (such as `Duration::MAX`).
fn shortened(duration: Duration, keep: f64) -> Duration {
    if keep >= 1.0 {
        return duration;
    }
    Duration::try_from_secs_f64(duration.as_secs_f64() * keep)
        .map_or(duration, |short| short.min(duration))
}
