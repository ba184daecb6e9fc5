//! The machine's decisions, fed events by hand: no backend, no clock, no sleep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{Decoder, Event, Io, LockPolicy, Machine, Note, Policy, Role, Step, Storing};
use crate::backend::GetOrLock;
use crate::codec::Codec;
use crate::error::Error;
use crate::options::{Refresh, Wait};

/// Values are one byte; `0xFF` is unreadable (another type's bytes).
fn decode(_codec: Codec, bytes: &[u8], _version: u32) -> Option<u8> {
    match bytes {
        [value] if *value != 0xFF => Some(*value),
        _ => None,
    }
}

fn machine(refresh: Refresh, wait: Option<Wait>, coalesce: bool) -> Machine<u8> {
    let policy = Policy {
        refresh,
        lock: wait.map(|wait| LockPolicy {
            wait,
            retry: Duration::from_millis(100),
        }),
        coalesce,
    };
    let decoder = Decoder {
        decode,
        codec: Codec::Bincode,
        version: 0,
    };
    Machine::new(policy, decoder, fastrand::Rng::with_seed(7))
}

fn locked(wait: Wait) -> Machine<u8> {
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
    Compute(Storing, Option<String>),
    Finished(Option<String>, bool),
}

fn kind(step: Step<'_, u8>) -> Kind {
    match step {
        Step::Io(io) => Kind::Io(format!("{io:?}")),
        Step::Hit { value, bytes } => Kind::Hit(value, bytes.is_some()),
        Step::Compute { store, note } => Kind::Compute(store, note.as_ref().map(name)),
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
        Note::StoreFailed(_) => "store failed".into(),
        Note::LockLost => "lock lost".into(),
    }
}

fn io(name: &str) -> Kind {
    Kind::Io(name.into())
}

fn attempted(at: Instant, found: GetOrLock) -> Event {
    Event::Attempted {
        at,
        found: Ok(found),
    }
}

#[test]
fn a_hit_is_one_read() {
    let mut m = locked(Wait::Forever);
    assert_eq!(kind(m.on(Event::Start)), io("Get"));
    assert_eq!(
        kind(m.on(Event::Read(Ok(Some(vec![5]))))),
        Kind::Hit(5, true)
    );
}

#[test]
fn a_locked_miss_is_read_lock_store_and_release() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    assert_eq!(kind(m.on(Event::Read(Ok(None)))), io("GetOrLock"));
    let step = m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
    match m.on(Event::Computed(Some(vec![9]))) {
        Step::Io(Io::StoreAndRelease(bytes)) => assert_eq!(bytes, [9]),
        other => panic!("expected store-and-release, got {:?}", kind(other)),
    }
    assert_eq!(
        kind(m.on(Event::Stored(Ok(true)))),
        Kind::Finished(None, true)
    );
}

#[test]
fn a_miss_without_a_lock_computes_and_stores_unlocked() {
    let mut m = machine(Refresh::IfMissing, None, true);
    m.on(Event::Start);
    let step = m.on(Event::Read(Ok(None)));
    assert_eq!(kind(step), Kind::Compute(Storing::Unlocked, None));
    assert_eq!(kind(m.on(Event::Computed(Some(vec![1])))), io("Store([1])"));
    assert_eq!(
        kind(m.on(Event::Stored(Ok(true)))),
        Kind::Finished(None, true)
    );
}

#[test]
fn unreadable_stored_bytes_are_a_miss_and_are_overwritten_under_the_lock() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    assert_eq!(
        kind(m.on(Event::Read(Ok(Some(vec![0xFF]))))),
        io("GetOrLock")
    );
    let step = m.on(attempted(Instant::now(), GetOrLock::Value(vec![0xFF])));
    assert_eq!(
        kind(step),
        io("TakeLock"),
        "the unreadable value is not returned"
    );
    let step = m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_failing_read_fails_open_and_stores_nothing() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    let step = m.on(Event::Read(Err(failure())));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
    let step = m.on(Event::Computed(Some(vec![3])));
    assert_eq!(
        kind(step),
        Kind::Finished(None, true),
        "followers still get it"
    );
}

#[test]
fn a_failing_lock_attempt_fails_open() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    let step = m.on(Event::Attempted {
        at: Instant::now(),
        found: Err(failure()),
    });
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Nothing, Some("fail open".into()))
    );
}

#[test]
fn a_held_lock_is_waited_for_then_the_stored_value_is_returned() {
    let mut m = locked(Wait::Forever);
    let start = Instant::now();
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    match m.on(attempted(start, GetOrLock::Held)) {
        Step::Io(Io::Pause { since, max }) => {
            assert_eq!(since, start);
            assert!(max >= Duration::from_millis(100) && max <= Duration::from_millis(125));
        }
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    assert_eq!(kind(m.on(Event::Paused)), io("GetOrLock"));
    let step = m.on(attempted(start, GetOrLock::Value(vec![4])));
    assert_eq!(kind(step), Kind::Hit(4, true));
}

#[test]
fn a_timeout_rereads_then_computes_unlocked() {
    let mut m = locked(Wait::For(Duration::from_secs(1)));
    let start = Instant::now();
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    match m.on(attempted(start, GetOrLock::Held)) {
        Step::Io(Io::Pause { .. }) => {}
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    m.on(Event::Paused);
    // The last pause is cut to what is left of the timeout.
    match m.on(attempted(
        start + Duration::from_millis(950),
        GetOrLock::Held,
    )) {
        Step::Io(Io::Pause { max, .. }) => assert_eq!(max, Duration::from_millis(50)),
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    m.on(Event::Paused);
    let step = m.on(attempted(start + Duration::from_secs(1), GetOrLock::Held));
    assert_eq!(kind(step), io("Get"), "one more read before computing");
    let step = m.on(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Unlocked, Some("lock timeout".into()))
    );
}

#[test]
fn a_timeout_that_finds_the_value_returns_it() {
    let mut m = locked(Wait::Never);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    assert_eq!(
        kind(m.on(attempted(Instant::now(), GetOrLock::Held))),
        io("Get")
    );
    assert_eq!(
        kind(m.on(Event::Read(Ok(Some(vec![8]))))),
        Kind::Hit(8, true)
    );
}

#[test]
fn a_lock_that_never_blocks_computes_at_once_when_held() {
    let mut m = locked(Wait::Never);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    m.on(attempted(Instant::now(), GetOrLock::Held));
    let step = m.on(Event::Read(Ok(None)));
    assert_eq!(
        kind(step),
        Kind::Compute(Storing::Unlocked, Some("lock busy".into()))
    );
}

#[test]
fn a_forced_refresh_never_reads_and_takes_the_lock() {
    let mut m = machine(Refresh::Forced, Some(Wait::Forever), true);
    assert_eq!(kind(m.on(Event::Start)), io("TakeLock"));
    match m.on(attempted(Instant::now(), GetOrLock::Held)) {
        Step::Io(Io::Pause { .. }) => {}
        other => panic!("expected a pause, got {:?}", kind(other)),
    }
    assert_eq!(kind(m.on(Event::Paused)), io("TakeLock"), "never GetOrLock");
    let step = m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(step), Kind::Compute(Storing::Locked, None));
}

#[test]
fn a_forced_refresh_without_a_lock_computes_at_once() {
    let mut m = machine(Refresh::Forced, None, true);
    let step = m.on(Event::Start);
    assert_eq!(kind(step), Kind::Compute(Storing::Unlocked, None));
}

#[test]
fn a_failed_computation_releases_the_lock_and_stores_nothing() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    assert_eq!(kind(m.on(Event::Computed(None))), io("Release"));
    assert_eq!(
        kind(m.on(Event::Stored(Ok(true)))),
        Kind::Finished(None, false)
    );
}

#[test]
fn a_lock_lost_before_the_store_is_reported() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.on(Event::Computed(Some(vec![1])));
    let step = m.on(Event::Stored(Ok(false)));
    assert_eq!(kind(step), Kind::Finished(Some("lock lost".into()), true));
}

#[test]
fn a_failing_store_is_reported_and_the_value_still_shared() {
    let mut m = locked(Wait::Forever);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    m.on(attempted(Instant::now(), GetOrLock::Locked { fence: 1 }));
    m.on(Event::Computed(Some(vec![1])));
    let step = m.on(Event::Stored(Err(failure())));
    assert_eq!(
        kind(step),
        Kind::Finished(Some("store failed".into()), true)
    );
}

#[test]
fn followers_take_the_leaders_value() {
    let mut m = machine(Refresh::IfMissing, Some(Wait::Forever), true);
    m.on(Event::Start);
    assert_eq!(kind(m.on(Event::Read(Ok(None)))), io("Join"));
    assert_eq!(kind(m.on(Event::Joined(Role::Follow))), io("AwaitLeader"));
    let landing: Arc<[u8]> = Arc::from(vec![6]);
    let step = m.on(Event::Landed(Some(landing)));
    assert_eq!(kind(step), Kind::Hit(6, false), "nothing to land again");
}

#[test]
fn followers_of_a_failed_leader_join_again_and_one_leads() {
    let mut m = machine(Refresh::IfMissing, Some(Wait::Forever), true);
    m.on(Event::Start);
    m.on(Event::Read(Ok(None)));
    m.on(Event::Joined(Role::Follow));
    assert_eq!(kind(m.on(Event::Landed(None))), io("Join"));
    assert_eq!(kind(m.on(Event::Joined(Role::Lead))), io("GetOrLock"));
}

#[test]
fn an_unexpected_event_fails_safe() {
    let mut m = locked(Wait::Forever);
    let step = m.on(Event::Paused);
    assert_eq!(kind(step), Kind::Compute(Storing::Nothing, None));
}
