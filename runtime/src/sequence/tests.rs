//! The machine's decisions, fed events by hand: no backend, no clock, no sleep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{
    Decoder, Event, Found, FreshPolicy, Io, LockPolicy, Machine, Mark, Note, Policy, Recheck, Role,
    Step, Storing, Verdict,
};
use crate::backend::GetOrLock;
use crate::coalesce::Landed;
use crate::codec::{Codec, Stamp};
use crate::error::Error;
use crate::kept::Share;
use crate::key::CacheKey;
use crate::options::{Refresh, Wait};

/// The calls' wall-clock time: 100 s after the epoch.
const NOW_MS: u64 = 100_000;

/// How long a process starts no refresh after one found the key's lock held.
const BACK_OFF: Duration = Duration::from_millis(250);

/// Values are one byte, fresh forever; a second byte is the second they stop being
/// fresh (and a third how many ms they took to compute). `0xFF` is unreadable.
fn decode(_codec: Codec, bytes: &[u8], _version: u32, _tags: u64) -> Option<(u8, Stamp)> {
    match *bytes {
        [value] if value != 0xFF => Some((value, Stamp::FOREVER)),
        [value, until] => Some((value, stamp(until, 0))),
        [value, until, took] => Some((value, stamp(until, took))),
        _ => None,
    }
}

/// The stamp of a value fresh until second `until` that took `took` ms to compute.
fn stamp(until: u8, took: u8) -> Stamp {
    Stamp {
        fresh_until_ms: u64::from(until) * 1000,
        compute_ms: u32::from(took),
    }
}

fn machine(refresh: Refresh, wait: Option<Wait>, coalesce: bool) -> Machine<'static, u8> {
    fresh_machine(refresh, wait, coalesce, 0, 0.0)
}

fn fresh_machine(
    refresh: Refresh,
    wait: Option<Wait>,
    coalesce: bool,
    stale_ms: u64,
    beta: f64,
) -> Machine<'static, u8> {
    seeded(policy(refresh, wait, coalesce, stale_ms, beta), None, 7)
}

/// The calls' policy.
fn policy(
    refresh: Refresh,
    wait: Option<Wait>,
    coalesce: bool,
    stale_ms: u64,
    beta: f64,
) -> Policy {
    Policy {
        refresh,
        lock: wait.map(|wait| LockPolicy {
            wait,
            retry: Duration::from_millis(100),
        }),
        coalesce,
        freshness: FreshPolicy {
            stale_ms,
            beta,
            fail_safe: Duration::from_secs(5),
            back_off: BACK_OFF,
            ttl_only: false,
            jitter: 0.0,
        },
        lock_expire: Duration::from_secs(30),
        expire: Duration::from_secs(60),
    }
}

/// A machine of `policy` whose random numbers are drawn from `seed`.
fn seeded(policy: Policy, share: Option<Share<u8>>, seed: u64) -> Machine<'static, u8> {
    let decoder = Decoder {
        decode: decode as fn(Codec, &[u8], u32, u64) -> Option<(u8, Stamp)>,
        codec: Codec::Bincode,
        version: 0,
        share,
    };
    Machine::new(policy, decoder, key(), Some(fastrand::Rng::with_seed(seed)))
}

/// Feeds events at the calls' time.
trait Feed {
    fn feed(&mut self, event: Event) -> Step<'_, u8>;
}

impl Feed for Machine<'_, u8> {
    fn feed(&mut self, event: Event) -> Step<'_, u8> {
        self.on(NOW_MS, event)
    }
}

/// The calls' key.
fn key() -> &'static CacheKey {
    static KEY: std::sync::OnceLock<CacheKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| crate::key::make_cache_key("k"))
}

fn locked(wait: Wait) -> Machine<'static, u8> {
    machine(Refresh::IfMissing, Some(wait), false)
}

fn failure() -> Error {
    Error::backend("get", "k", "connection refused")
}

/// What a step is, without its borrowed data, for assertions.
#[derive(Debug, PartialEq)]
enum Kind {
    Io(String),
    Hit(u8, bool),
    Stale(u8, Verdict),
    Skip(Option<String>, Option<Duration>),
    Compute(Storing, Option<String>),
    Finished(Option<String>, bool),
}

fn kind(step: Step<'_, u8>) -> Kind {
    match step {
        Step::Io(io) => Kind::Io(match io {
            Io::GetKept(_) => "GetKept".into(),
            Io::GetOrLock(_) => "GetOrLock".into(),
            Io::TakeLock(_) => "TakeLock".into(),
            Io::Recheck { .. } => "Recheck".into(),
            Io::StoreAndRelease { bytes, .. } => format!("StoreAndRelease({bytes:?})"),
            Io::Throttle { ttl, mark, .. } => {
                format!("Throttle {{ ttl: {ttl:?}, mark: {mark:?} }}")
            }
            io => format!("{io:?}"),
        }),
        Step::Hit(Found {
            value,
            bytes,
            verdict: Verdict::Fresh,
            ..
        }) => Kind::Hit(value, bytes.is_some()),
        Step::Hit(Found { value, verdict, .. }) => Kind::Stale(value, verdict),
        Step::Skip { note, back_off } => Kind::Skip(note.as_ref().map(name), back_off),
        Step::Compute { store, note, .. } => Kind::Compute(store, note.as_ref().map(name)),
        Step::Finished { note, landing } => {
            Kind::Finished(note.as_ref().map(name), landing.is_some())
        }
    }
}

fn name(note: &Note) -> String {
    match note {
        Note::FailOpen(_) => "fail open".into(),
        Note::LockTimeout { .. } => "lock timeout".into(),
        Note::LockBusy => "lock busy".into(),
        Note::Concurrent => "concurrent".into(),
        Note::StoreFailed(_) => "store failed".into(),
        Note::LockLost => "lock lost".into(),
        Note::RevalidationFailed(_) => "refresh failed".into(),
    }
}

fn io(name: &str) -> Kind {
    Kind::Io(name.into())
}

/// A refresh (no trigger, 60 s of `stale`) that has just taken the key's lock.
fn refresh_under_lock() -> Machine<'static, u8> {
    let mut m = fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0);
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m
}

/// What a refresh reads again under its lock: the value fresh until 90 s, and a
/// throttle mark until `until_ms` left by the value fresh until `of_ms`.
fn marked(until_ms: u64, of_ms: u64) -> Event {
    Event::Rechecked(Ok(Recheck {
        value: Some(vec![4, 90]),
        mark: Some(Mark { until_ms, of_ms }),
    }))
}

/// What a refresh reads again under its lock: `value`, no throttle mark.
fn rechecked(value: Option<Vec<u8>>) -> Event {
    Event::Rechecked(Ok(Recheck { value, mark: None }))
}

fn attempted(at: Instant, found: GetOrLock) -> Event {
    Event::Attempted {
        at,
        found: Ok(found),
        watched: None,
    }
}

#[test]
fn a_hit_is_one_read() {
    let mut m = locked(Wait::Forever);
    assert_eq!(kind(m.feed(Event::Start)), io("Get"));
    let hit = m.feed(Event::Read(Ok(Some(vec![5]))));
    assert_eq!(kind(hit), Kind::Hit(5, true));
    let more = m.feed(Event::Read(Ok(Some(vec![6]))));
    assert_eq!(
        kind(more),
        Kind::Compute(Storing::Nothing, None),
        "the sequence is over: safe end"
    );
}

#[test]
fn a_kept_decoded_value_is_judged_as_its_bytes_would_be() {
    let keeping = |stale_ms| {
        let policy = policy(Refresh::IfMissing, Some(Wait::Forever), true, stale_ms, 0.0);
        let mut m = seeded(policy, Some(Share::new()), 7);
        assert_eq!(kind(m.feed(Event::Start)), io("GetKept"));
        m
    };
    let kept = |value: u8, until: u8| -> Option<crate::backend::DecodedValue> {
        Some(Share::<u8>::new().keep(&value, stamp(until, 0), Codec::Bincode, 0))
    };
    // Fresh: a hit (nothing to keep: it came decoded), and the sequence is over.
    let mut m = keeping(0);
    assert_eq!(kind(m.feed(Event::Kept(kept(5, 200)))), Kind::Hit(5, false));
    // Stale within `stale`: this process's refresh is claimed first, as after a read.
    let mut m = keeping(60_000);
    assert_eq!(kind(m.feed(Event::Kept(kept(7, 90)))), io("ClaimRefresh"));
    // Too old: a miss.
    let mut m = keeping(60_000);
    assert_eq!(kind(m.feed(Event::Kept(kept(7, 10)))), io("Join"));
    // Kept as another type, or nothing kept: the bytes are read as usual, and a fresh
    // hit read as bytes is offered to keep.
    for other in [Some(Arc::new(5_u16) as crate::backend::DecodedValue), None] {
        let mut m = keeping(0);
        assert_eq!(kind(m.feed(Event::Kept(other))), io("Get"));
        match m.feed(Event::Read(Ok(Some(vec![5])))) {
            Step::Hit(Found {
                value: 5,
                keep: true,
                stamp,
                ..
            }) => {
                let kept = Share::<u8>::new().keep(&5, stamp, Codec::Bincode, 0);
                assert!(Share::<u8>::new().take(&*kept, Codec::Bincode, 0).is_some());
            }
            _ => panic!("a fresh hit read as bytes is kept decoded"),
        }
    }
    // A machine that does not keep values decoded reads the bytes, and keeps nothing.
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 0, 0.0);
    assert_eq!(kind(m.feed(Event::Start)), io("Get"));
    let step = m.feed(Event::Read(Ok(Some(vec![5]))));
    assert!(matches!(step, Step::Hit(Found { keep: false, .. })));
    // A forced refresh does not read first.
    let mut m = machine(Refresh::Forced, Some(Wait::Forever), false);
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
}

#[test]
fn the_machine_names_the_lock_its_expiry_the_mark_and_the_ttl() {
    let mut m = fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0);
    match m.feed(Event::Start) {
        Step::Io(Io::TakeLock(lock)) => {
            assert_eq!(lock.key, key().lock_key());
            assert_eq!(lock.expire, Duration::from_secs(30));
        }
        _ => panic!("a refresh takes the lock"),
    }
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    match m.feed(rechecked(None)) {
        Step::Compute { life, .. } => {
            assert_eq!(life.fresh, Duration::from_secs(60));
            assert_eq!(life.ttl, Duration::from_secs(120), "expire + stale");
        }
        _ => panic!("nothing stored: the refresh computes"),
    }
    match m.feed(Event::Computed(Some(vec![9]))) {
        Step::Io(Io::StoreAndRelease { ttl, .. }) => assert_eq!(ttl, Duration::from_secs(120)),
        _ => panic!("stored under the lock"),
    }
    let mut m = refresh_under_lock();
    m.feed(rechecked(None));
    match m.feed(Event::Computed(None)) {
        Step::Io(Io::Throttle { mark_key, .. }) => assert_eq!(mark_key, key().refresh_key()),
        _ => panic!("a failed refresh leaves the throttle mark"),
    }
}

#[test]
fn a_value_is_judged_at_the_time_of_the_event_that_found_it() {
    // Stale within `stale` 10 s after the call began (fresh until 105 s): a waiter that
    // finds it after its wait judges it then, not at the time the call began.
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 60_000, 0.0);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(Event::Joined(Role::Lead));
    m.feed(attempted(Instant::now(), GetOrLock::Held));
    let step = m.on(NOW_MS + 10_000, Event::Paused(None));
    assert_eq!(kind(step), io("GetOrLock"));
    let found = attempted(Instant::now(), GetOrLock::Value(vec![4, 105]));
    assert_eq!(kind(m.on(NOW_MS + 10_000, found)), io("ClaimRefresh"));
}

#[test]
fn a_locked_miss_is_read_lock_store_and_release() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    assert_eq!(kind(m.feed(Event::Read(Ok(None)))), io("GetOrLock"));
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
    match m.feed(Event::Computed(Some(vec![9]))) {
        Step::Io(Io::StoreAndRelease { bytes, .. }) => assert_eq!(bytes, [9]),
        other => panic!("expected store-and-release, got {:?}", kind(other)),
    }
    assert_eq!(
        kind(m.feed(Event::Stored(Ok(true)))),
        Kind::Finished(None, true)
    );
}

#[test]
fn a_miss_without_a_configured_lock_still_stores_under_the_lock() {
    let mut m = machine(Refresh::IfMissing, None, true);
    m.feed(Event::Start);
    let step = m.feed(Event::Read(Ok(None)));
    assert_eq!(kind(step), io("GetOrLock"), "not coalesced, but fenced");
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
    assert_eq!(
        kind(m.feed(Event::Computed(Some(vec![1])))),
        io("StoreAndRelease([1])")
    );
}

#[test]
fn a_miss_without_a_configured_lock_never_waits_and_stores_nothing_when_it_is_held() {
    let mut m = machine(Refresh::IfMissing, None, true);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(m.feed(attempted(Instant::now(), GetOrLock::Held))),
        io("Get")
    );
    let step = m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("concurrent".into()))
    );
}

#[test]
fn unreadable_stored_bytes_are_a_miss_and_are_overwritten_under_the_lock() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    assert_eq!(
        kind(m.feed(Event::Read(Ok(Some(vec![0xFF]))))),
        io("GetOrLock")
    );
    let step = m.feed(attempted(Instant::now(), GetOrLock::Value(vec![0xFF])));
    assert_eq!(
        kind(step),
        io("TakeLock"),
        "the unreadable value is not returned"
    );
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_failing_read_fails_open_and_stores_nothing() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    let step = m.feed(Event::Read(Err(failure().into())));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
    let step = m.feed(Event::Computed(Some(vec![3])));
    assert_eq!(
        kind(step),
        Kind::Finished(None, true),
        "followers still get it"
    );
}

#[test]
fn a_failing_lock_attempt_fails_open() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    let step = m.feed(Event::Attempted {
        at: Instant::now(),
        found: Err(failure().into()),
        watched: None,
    });
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
}

#[test]
fn a_waiter_keeps_waiting_through_backend_errors_and_finds_the_value() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    m.feed(Event::Paused(None));
    // The primary died: the attempts fail until a replica is promoted.
    for after in [1, 2, 29] {
        let step = m.feed(Event::Attempted {
            at: start + Duration::from_secs(after),
            found: Err(failure().into()),
            watched: None,
        });
        match step {
            Step::Io(Io::Pause { .. }) => {}
            other => panic!("expected a pause, got {:?}", kind(other)),
        }
        assert_eq!(kind(m.feed(Event::Paused(None))), io("GetOrLock"));
    }
    let step = m.feed(attempted(
        start + Duration::from_secs(30),
        GetOrLock::Value(vec![6]),
    ));
    assert_eq!(kind(step), Kind::Hit(6, true));
}

#[test]
fn a_value_the_release_delivered_is_judged_as_a_read_after_the_wait() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    // Delivered with the release: returned without another read.
    assert_eq!(
        kind(m.feed(Event::Paused(Some(vec![7])))),
        Kind::Hit(7, true)
    );

    // Too old when it arrives (judged now): attempted for, as after a bare wake-up.
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    assert_eq!(
        kind(m.feed(Event::Paused(Some(vec![7, 50])))),
        io("GetOrLock")
    );

    // A forced refresh waits for the lock, not for a value.
    let mut m = machine(Refresh::Forced, Some(Wait::Forever), false);
    m.feed(Event::Start);
    m.feed(Event::Attempted {
        at: start,
        found: Ok(GetOrLock::Held),
        watched: None,
    });
    assert_eq!(kind(m.feed(Event::Paused(Some(vec![7])))), io("TakeLock"));
}

#[test]
fn a_waiter_whose_lock_was_lost_in_a_failover_takes_it_and_stores() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    m.feed(Event::Paused(None));
    m.feed(Event::Attempted {
        at: start + Duration::from_secs(1),
        found: Err(failure().into()),
        watched: None,
    });
    m.feed(Event::Paused(None));
    let step = m.feed(attempted(
        start + Duration::from_secs(2),
        GetOrLock::Locked { fence: 1 },
    ));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_waiter_fails_open_once_errors_outlast_the_lock_expiry() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    m.feed(Event::Paused(None));
    let failed = |after: u64| Event::Attempted {
        at: start + Duration::from_secs(after),
        found: Err(failure().into()),
        watched: None,
    };
    assert!(matches!(m.feed(failed(10)), Step::Io(Io::Pause { .. })));
    m.feed(Event::Paused(None));
    // The expiry counts from the first error (10 s), not from the wait's start.
    assert!(matches!(m.feed(failed(39)), Step::Io(Io::Pause { .. })));
    m.feed(Event::Paused(None));
    assert_eq!(
        kind(m.feed(failed(40))),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
}

#[test]
fn a_waiter_with_a_timeout_stops_riding_out_errors_at_the_timeout() {
    let mut m = locked(Wait::For(Duration::from_secs(2)));
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(start, GetOrLock::Held));
    m.feed(Event::Paused(None));
    let step = m.feed(Event::Attempted {
        at: start + Duration::from_secs(2),
        found: Err(failure().into()),
        watched: None,
    });
    assert_eq!(kind(step), io("Get"), "one more read before computing");
    let step = m.feed(Event::Read(Err(failure().into())));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
}

#[test]
fn a_held_lock_is_waited_for_then_the_stored_value_is_returned() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    match m.feed(attempted(start, GetOrLock::Held)) {
        Step::Io(Io::Pause { since, max, .. }) => {
            assert_eq!(since, start);
            assert!(max >= Duration::from_millis(100) && max <= Duration::from_millis(125));
        }
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    assert_eq!(kind(m.feed(Event::Paused(None))), io("GetOrLock"));
    let step = m.feed(attempted(start, GetOrLock::Value(vec![4])));
    assert_eq!(kind(step), Kind::Hit(4, true));
}

#[test]
fn a_waiter_the_backend_wakes_pauses_until_the_locks_expiry_at_most_a_check_apart() {
    let held_watched = |at: Instant, expires_in: u64| Event::Attempted {
        at,
        found: Ok(GetOrLock::Held),
        watched: Some(Duration::from_millis(expires_in)),
    };
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    // Until the release or the expiry, not the retry; but at most `WATCHED_CHECK`
    // (1 s, plus up to 25 % of the 100 ms retry) between checks.
    match m.feed(held_watched(start, 700)) {
        Step::Io(Io::Pause { max, .. }) => {
            assert!(max >= Duration::from_millis(700) && max <= Duration::from_millis(725));
        }
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    assert_eq!(kind(m.feed(Event::Paused(None))), io("GetOrLock"));
    match m.feed(held_watched(start, 20_000)) {
        Step::Io(Io::Pause { max, .. }) => {
            assert!(max >= Duration::from_secs(1) && max <= Duration::from_millis(1_025));
        }
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    // A lock about to expire: spread by up to 25 % of its own life.
    assert_eq!(kind(m.feed(Event::Paused(None))), io("GetOrLock"));
    match m.feed(held_watched(start, 8)) {
        Step::Io(Io::Pause { max, .. }) => {
            assert!(max >= Duration::from_millis(8) && max <= Duration::from_millis(10));
        }
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    // The timeout still bounds the wait.
    let mut m = locked(Wait::For(Duration::from_millis(500)));
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    match m.feed(held_watched(start, 20_000)) {
        Step::Io(Io::Pause { max, .. }) => assert_eq!(max, Duration::from_millis(500)),
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
}

#[test]
fn a_timeout_rereads_then_computes_unlocked() {
    let mut m = locked(Wait::For(Duration::from_secs(1)));
    let start = Instant::now();
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    match m.feed(attempted(start, GetOrLock::Held)) {
        Step::Io(Io::Pause { .. }) => {}
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    m.feed(Event::Paused(None));
    // The last pause is cut to what is left of the timeout.
    match m.feed(attempted(
        start + Duration::from_millis(950),
        GetOrLock::Held,
    )) {
        Step::Io(Io::Pause { max, .. }) => assert_eq!(max, Duration::from_millis(50)),
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    m.feed(Event::Paused(None));
    let step = m.feed(attempted(start + Duration::from_secs(1), GetOrLock::Held));
    assert_eq!(kind(step), io("Get"), "one more read before computing");
    let step = m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("lock timeout".into()))
    );
}

#[test]
fn a_timeout_that_finds_the_value_returns_it() {
    let mut m = locked(Wait::Never);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(m.feed(attempted(Instant::now(), GetOrLock::Held))),
        io("Get")
    );
    assert_eq!(
        kind(m.feed(Event::Read(Ok(Some(vec![8]))))),
        Kind::Hit(8, true)
    );
}

#[test]
fn a_lock_that_never_blocks_computes_at_once_when_held() {
    let mut m = locked(Wait::Never);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(Instant::now(), GetOrLock::Held));
    let step = m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("lock busy".into()))
    );
}

#[test]
fn a_forced_refresh_never_reads_and_takes_the_lock() {
    let mut m = machine(Refresh::Forced, Some(Wait::Forever), true);
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
    match m.feed(attempted(Instant::now(), GetOrLock::Held)) {
        Step::Io(Io::Pause { .. }) => {}
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    assert_eq!(
        kind(m.feed(Event::Paused(None))),
        io("TakeLock"),
        "never GetOrLock"
    );
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_forced_refresh_without_a_configured_lock_takes_it_without_waiting() {
    let mut m = machine(Refresh::Forced, None, true);
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
    let step = m.feed(attempted(Instant::now(), GetOrLock::Held));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("concurrent".into()))
    );
}

#[test]
fn a_failed_computation_releases_the_lock_and_stores_nothing() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(m.feed(Event::Computed(None))), io("Release"));
    assert_eq!(
        kind(m.feed(Event::Stored(Ok(true)))),
        Kind::Finished(None, false)
    );
}

#[test]
fn a_lock_lost_before_the_store_is_reported() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.feed(Event::Computed(Some(vec![1])));
    let step = m.feed(Event::Stored(Ok(false)));
    assert_eq!(
        kind(step),
        Kind::Finished(Some("lock lost".into()), false),
        "the refused value is not shared"
    );
}

/// A store that failed may have landed after an invalidation, or not at all: its value
/// is the caller's alone (followers run the sequence again).
#[test]
fn a_failing_store_is_reported_and_the_value_not_shared() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.feed(Event::Computed(Some(vec![1])));
    let step = m.feed(Event::Stored(Err(failure().into())));
    assert_eq!(
        kind(step),
        Kind::Finished(Some("store failed".into()), false)
    );
}

#[test]
fn followers_take_the_leaders_value() {
    let mut m = machine(Refresh::IfMissing, Some(Wait::Forever), true);
    m.feed(Event::Start);
    assert_eq!(kind(m.feed(Event::Read(Ok(None)))), io("Join"));
    assert_eq!(
        kind(m.feed(Event::Joined(Role::Follow))),
        io("AwaitLeader { max: None }")
    );
    let landing: Arc<[u8]> = Arc::from(vec![6]);
    let step = m.feed(Event::Landed(Landed::Value(landing)));
    assert_eq!(kind(step), Kind::Hit(6, false), "nothing to land again");
}

#[test]
fn followers_of_a_failed_leader_join_again_and_one_leads() {
    let mut m = machine(Refresh::IfMissing, Some(Wait::Forever), true);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(Event::Joined(Role::Follow));
    assert_eq!(kind(m.feed(Event::Landed(Landed::Abandoned))), io("Join"));
    assert_eq!(kind(m.feed(Event::Joined(Role::Lead))), io("GetOrLock"));
}

#[test]
fn an_unexpected_event_fails_safe() {
    let mut m = locked(Wait::Forever);
    let step = m.feed(Event::Paused(None));
    assert_eq!(kind(step), Kind::Compute(Storing::Nothing, None));
}

#[test]
fn a_value_past_its_freshness_within_stale_is_served_and_refreshed() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 60_000, 0.0);
    m.feed(Event::Start);
    // Fresh until 90 s; now is 100 s; stale for 60 s more.
    let step = m.feed(Event::Read(Ok(Some(vec![4, 90]))));
    assert_eq!(kind(step), io("ClaimRefresh"), "one refresh per process");
    let step = m.feed(Event::Claimed(true));
    assert_eq!(kind(step), Kind::Stale(4, Verdict::Stale));
}

#[test]
fn a_stale_hit_while_this_process_refreshes_the_key_starts_no_refresh() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 60_000, 0.0);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(Some(vec![4, 90]))));
    let step = m.feed(Event::Claimed(false));
    assert_eq!(
        kind(step),
        Kind::Stale(4, Verdict::Underway),
        "served, not refreshed again"
    );
}

#[test]
fn a_fresh_hit_claims_nothing() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 60_000, 0.0);
    m.feed(Event::Start);
    let step = m.feed(Event::Read(Ok(Some(vec![4, 101]))));
    assert_eq!(kind(step), Kind::Hit(4, true), "one read, nothing else");
}

#[test]
fn a_value_past_expire_plus_stale_is_a_miss() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 5_000, 0.0);
    m.feed(Event::Start);
    // Fresh until 90 s, servable until 95 s; now is 100 s.
    let step = m.feed(Event::Read(Ok(Some(vec![4, 90]))));
    assert_eq!(kind(step), io("Join"), "never served");
}

#[test]
fn with_ttl_only_freshness_a_stored_value_is_fresh_whatever_its_stamp() {
    let policy = Policy {
        freshness: FreshPolicy::TTL_ONLY,
        ..policy(Refresh::IfMissing, None, false, 0, 0.0)
    };
    let mut m = seeded(policy, None, 1);
    m.feed(Event::Start);
    assert_eq!(
        kind(m.feed(Event::Read(Ok(Some(vec![4, 1]))))),
        Kind::Hit(4, true)
    );
}

#[test]
fn without_stale_a_value_past_its_freshness_is_a_miss() {
    let mut m = locked(Wait::Forever);
    m.feed(Event::Start);
    assert_eq!(
        kind(m.feed(Event::Read(Ok(Some(vec![4, 99]))))),
        io("GetOrLock")
    );
    assert_eq!(
        kind(m.feed(attempted(Instant::now(), GetOrLock::Value(vec![4, 99])))),
        io("TakeLock"),
        "found again while waiting: still too old, overwritten"
    );
}

#[test]
fn a_fresh_value_is_not_refreshed_without_beta() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Forever), true, 60_000, 0.0);
    m.feed(Event::Start);
    assert_eq!(
        kind(m.feed(Event::Read(Ok(Some(vec![4, 101, 255]))))),
        Kind::Hit(4, true)
    );
}

#[test]
fn xfetch_refreshes_early_more_often_as_expiry_nears() {
    let early = |until: u8| {
        (0..1000)
            .filter(|seed| {
                let policy = policy(Refresh::IfMissing, None, false, 0, 1.0);
                let mut m = seeded(policy, None, *seed);
                m.feed(Event::Start);
                // Took 250 ms to compute; fresh until `until` seconds.
                if kind(m.feed(Event::Read(Ok(Some(vec![4, until, 250]))))) != io("ClaimRefresh") {
                    return false;
                }
                kind(m.feed(Event::Claimed(true))) == Kind::Stale(4, Verdict::Early)
            })
            .count()
    };
    let (far, near) = (early(102), early(101));
    assert!(
        far < near,
        "{far} early refreshes 2 s before expiry, {near} 1 s before"
    );
    assert!(near > 0 && far < 1000);
}

#[test]
fn a_refresh_takes_the_lock_without_waiting_and_skips_when_it_is_held() {
    let mut m = fresh_machine(Refresh::Revalidate, Some(Wait::Forever), false, 60_000, 0.0);
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
    let step = m.feed(attempted(Instant::now(), GetOrLock::Held));
    assert_eq!(
        kind(step),
        Kind::Skip(None, Some(BACK_OFF)),
        "another caller refreshes: this process backs off"
    );
}

#[test]
fn a_refresh_without_a_configured_lock_still_takes_one() {
    let mut m = fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0);
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 3 }));
    assert_eq!(kind(step), io("Recheck"), "read again under the lock");
    let step = m.feed(rechecked(Some(vec![4, 90])));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Locked, None),
        "still stale"
    );
    assert_eq!(
        kind(m.feed(Event::Computed(Some(vec![5, 200])))),
        io("StoreAndRelease([5, 200])")
    );
}

#[test]
fn a_failed_refresh_leaves_the_throttle_mark_and_releases_the_lock() {
    let mut m = refresh_under_lock();
    m.feed(rechecked(None));
    let step = m.feed(Event::Computed(None));
    assert_eq!(
        kind(step),
        io("Throttle { ttl: 5s, mark: Mark { until_ms: 105000, of_ms: 0 } }"),
        "the fleet backs off until the mark ends; the lock goes back"
    );
    let step = m.feed(Event::Stored(Ok(true)));
    assert_eq!(
        kind(step),
        Kind::Finished(Some("refresh failed".into()), false)
    );
}

#[test]
fn a_refresh_that_finds_the_throttle_mark_gives_its_lock_back_and_backs_off() {
    let mut m = refresh_under_lock();
    let step = m.feed(marked(NOW_MS + 3_000, 90_000));
    assert_eq!(kind(step), io("Release"), "throttled: nothing computed");
    assert_eq!(
        kind(m.feed(Event::Stored(Ok(true)))),
        Kind::Skip(None, Some(Duration::from_secs(3))),
        "backs off until the mark ends"
    );
}

#[test]
fn a_throttle_mark_that_ended_is_ignored() {
    let mut m = refresh_under_lock();
    let step = m.feed(marked(NOW_MS - 1, 90_000));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_throttle_mark_of_another_value_is_ignored() {
    let mut m = refresh_under_lock();
    let step = m.feed(marked(NOW_MS + 3_000, 80_000));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Locked, None),
        "left by an older value's failure"
    );
}

#[test]
fn a_failed_refresh_never_marks_past_its_values_life() {
    // Fresh until 90 s, stale for 12 s more: gone at 102 s (the mark ends 20 ms before);
    // now is 100 s, fail_safe 5 s.
    let mut m =
        fresh_machine(Refresh::Revalidate, None, false, 12_000, 0.0).revalidating(stamp(90, 0));
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.feed(rechecked(Some(vec![4, 90])));
    assert_eq!(
        kind(m.feed(Event::Computed(None))),
        io("Throttle { ttl: 1.98s, mark: Mark { until_ms: 101980, of_ms: 90000 } }")
    );
}

#[test]
fn a_refresh_that_cannot_reach_the_backend_skips() {
    let mut m = fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0);
    m.feed(Event::Start);
    let step = m.feed(Event::Attempted {
        at: Instant::now(),
        found: Err(failure().into()),
        watched: None,
    });
    assert_eq!(
        kind(step),
        Kind::Skip(Some("refresh failed".into()), Some(BACK_OFF))
    );
}

#[test]
fn a_refresh_that_finds_the_value_refreshed_gives_its_lock_back() {
    let mut m = fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0);
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 2 }));
    // Another refresher stored a value fresh until 200 s meanwhile.
    assert_eq!(kind(m.feed(rechecked(Some(vec![5, 200])))), io("Release"));
    assert_eq!(
        kind(m.feed(Event::Stored(Ok(true)))),
        Kind::Skip(None, None),
        "refreshed: no back-off needed"
    );
}

#[test]
fn a_refresh_that_finds_another_value_under_the_lock_does_not_compute() {
    // Triggered by the value fresh until 90 s (now: 100 s); another process stored one
    // fresh until 102 s between this caller's read and its taking the key's lock.
    let mut m = fresh_machine(Refresh::Revalidate, Some(Wait::Forever), false, 60_000, 0.0)
        .revalidating(stamp(90, 0));
    assert_eq!(kind(m.feed(Event::Start)), io("TakeLock"));
    let step = m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 4 }));
    assert_eq!(kind(step), io("Recheck"));
    assert_eq!(kind(m.feed(rechecked(Some(vec![5, 102])))), io("Release"));
    assert_eq!(
        kind(m.feed(Event::Stored(Ok(true)))),
        Kind::Skip(None, None),
        "refreshed: no back-off needed"
    );
}

#[test]
fn a_refresh_that_finds_the_value_it_was_triggered_by_computes() {
    let mut m =
        fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0).revalidating(stamp(90, 0));
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 4 }));
    assert_eq!(
        kind(m.feed(rechecked(Some(vec![4, 90])))),
        Kind::Compute(Storing::Locked, None)
    );
}

#[test]
fn a_refresh_that_finds_another_value_already_stale_computes() {
    let mut m =
        fresh_machine(Refresh::Revalidate, None, false, 60_000, 0.0).revalidating(stamp(90, 0));
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 4 }));
    assert_eq!(
        kind(m.feed(rechecked(Some(vec![5, 95])))),
        Kind::Compute(Storing::Locked, None),
        "replaced, but by a value past its freshness too"
    );
}

#[test]
fn an_early_refresh_that_finds_its_value_under_the_lock_computes_without_drawing_again() {
    // Drawn early for the value fresh until 101 s (now: 100 s) that took 250 ms: a
    // second draw would say "not yet" 98 % of the time, so the stamp decides, not a draw.
    for seed in 0..100 {
        let policy = policy(Refresh::Revalidate, None, false, 60_000, 1.0);
        let mut m = seeded(policy, None, seed).revalidating(stamp(101, 250));
        m.feed(Event::Start);
        m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 4 }));
        assert_eq!(
            kind(m.feed(rechecked(Some(vec![4, 101, 250])))),
            Kind::Compute(Storing::Locked, None),
            "seed {seed}"
        );
    }
}

#[test]
fn an_early_refresh_that_finds_a_newer_value_under_the_lock_does_not_compute() {
    let mut m =
        fresh_machine(Refresh::Revalidate, None, false, 60_000, 1.0).revalidating(stamp(101, 250));
    m.feed(Event::Start);
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 4 }));
    assert_eq!(
        kind(m.feed(rechecked(Some(vec![5, 103, 250])))),
        io("Release")
    );
}

#[test]
fn a_follower_waits_for_its_leader_no_longer_than_its_lock_timeout() {
    let mut m = fresh_machine(
        Refresh::IfMissing,
        Some(Wait::For(Duration::from_secs(2))),
        true,
        0,
        0.0,
    );
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    let step = m.feed(Event::Joined(Role::Follow));
    assert_eq!(kind(step), io("AwaitLeader { max: Some(2s) }"));
    assert_eq!(kind(m.feed(Event::Landed(Landed::TimedOut))), io("Get"));
    let step = m.feed(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("lock timeout".into()))
    );
}

#[test]
fn a_caller_that_never_waits_never_follows_a_leader() {
    let mut m = fresh_machine(Refresh::IfMissing, Some(Wait::Never), true, 0, 0.0);
    m.feed(Event::Start);
    assert_eq!(
        kind(m.feed(Event::Read(Ok(None)))),
        io("GetOrLock"),
        "no Join"
    );
}

#[test]
fn a_refused_store_is_not_shared_with_followers() {
    let mut m = machine(Refresh::IfMissing, Some(Wait::Forever), true);
    m.feed(Event::Start);
    m.feed(Event::Read(Ok(None)));
    m.feed(Event::Joined(Role::Lead));
    m.feed(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.feed(Event::Computed(Some(vec![1])));
    let step = m.feed(Event::Stored(Ok(false)));
    assert_eq!(kind(step), Kind::Finished(Some("lock lost".into()), false));
}
