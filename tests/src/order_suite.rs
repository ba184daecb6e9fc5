//! One order of writes per key (issue 19): a refresh, a forced refresh, a miss and an
//! invalidation of one key take their places in one order, so no value lands over a
//! newer one, no call begun after an invalidation gets a value computed before it, a
//! `None` under `cache_none = false` replaces the stored `Some`, and nothing older than
//! `expire + stale` is returned. Races are staged at exact steps with the probe's hook
//! and channels; the clock is injected.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::__private::{Detached, Entry, Inline, OptionOutcome, call};
use cache_memoize::{Clock, MemoizeOptions, make_cache_key, memoize, refresh, try_memoize};

use crate::freshness_suite::ManualClock;
use crate::{Fixture, wait_until};

/// Options with values fresh for 10 s and servable stale for 1 h more, on `clock`,
/// without a lock option: every store is made under the key's lock all the same.
fn stale_opts(f: &Fixture, clock: &Arc<ManualClock>) -> MemoizeOptions {
    f.opts()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .fail_safe(Duration::from_secs(3600))
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
}

/// How many attempts at the key's lock have returned (taken or found held).
fn lock_attempts(f: &Fixture, key: &str) -> usize {
    let lock_key = make_cache_key(key).lock_key();
    f.probe
        .keys_done_of("take_lock")
        .iter()
        .chain(f.probe.keys_done_of("get_or_lock").iter())
        .filter(|k| **k == lock_key || **k == make_cache_key(key).as_str())
        .count()
}

/// Issue 19, behaviour 1: a stale refresh that started from the old inputs, and a
/// forced refresh made after the data changed: the forced refresh's value is the one
/// left stored, whatever order they finish in (the forced refresh waits for the stale
/// one's lock, then stores after it).
pub fn a_stale_refresh_never_lands_over_a_later_forced_refresh(f: &Fixture) {
    let key = f.key("order-refresh-forced");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));

    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (key, opts) = (&key, &opts);
        let stale = s.spawn(move || {
            memoize(key, opts, || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                "old inputs".to_owned()
            })
        });
        assert!(started.recv().is_ok(), "the stale refresh started");
        let attempts = lock_attempts(f, key);
        let forced = s.spawn(|| refresh(|| memoize(key, opts, || "new inputs".to_owned())));
        wait_until("the forced refresh found the lock held", || {
            lock_attempts(f, key) > attempts
        });
        drop(go);
        assert_eq!(forced.join().ok(), Some("new inputs".to_owned()));
        assert!(stale.join().is_ok());
    });
    assert_eq!(
        memoize(&key, &opts, || "recomputed".to_owned()),
        "new inputs",
        "the forced refresh's value is the last write"
    );
}

/// Issue 19, behaviour 1 without a forced refresh: the stale value expires past
/// `expire + stale` while its refresh runs; a plain miss then waits for that refresh
/// (one lock per key) instead of storing a value the refresh would overwrite. Every
/// later read returns what the miss returned.
pub fn a_miss_during_a_refresh_is_ordered_after_it(f: &Fixture) {
    let key = f.key("order-refresh-miss");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock).lock(crate::fast_lock());
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));

    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let missed = std::thread::scope(|s| {
        let (key, opts) = (&key, &opts);
        let stale = s.spawn(move || {
            memoize(key, opts, || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                "refreshed".to_owned()
            })
        });
        assert!(started.recv().is_ok(), "the refresh started");
        clock.advance(Duration::from_secs(3600));
        let attempts = lock_attempts(f, key);
        let miss = s.spawn(|| memoize(key, opts, || "missed".to_owned()));
        wait_until("the miss found the lock held", || {
            lock_attempts(f, key) > attempts
        });
        drop(go);
        assert!(stale.join().is_ok());
        miss.join().ok()
    });
    let Some(missed) = missed else {
        panic!("the miss panicked");
    };
    assert_eq!(
        memoize(&key, &opts, || "recomputed".to_owned()),
        missed,
        "no older write lands after the miss returned"
    );
}

/// Issue 19, behaviour 9: without `lock`, a forced refresh made while another caller
/// holds the key's lock waits for it and stores after it; it never returns a value
/// the cache then does not hold.
pub fn a_forced_refresh_without_lock_waits_and_lands(f: &Fixture) {
    let key = f.key("order-forced-unlocked");
    let opts = f.opts();
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (key, opts) = (&key, &opts);
        let holder = s.spawn(move || {
            memoize(key, opts, || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                "older".to_owned()
            })
        });
        assert!(started.recv().is_ok(), "the holder computes under the lock");
        let attempts = lock_attempts(f, key);
        let forced = s.spawn(|| refresh(|| memoize(key, opts, || "newer".to_owned())));
        wait_until("the forced refresh found the lock held", || {
            lock_attempts(f, key) > attempts
        });
        drop(go);
        assert_eq!(holder.join().ok(), Some("older".to_owned()));
        assert_eq!(forced.join().ok(), Some("newer".to_owned()));
    });
    assert_eq!(
        memoize(&key, &opts, || "recomputed".to_owned()),
        "newer",
        "the forced refresh stored its value after the holder's"
    );
}

/// Issue 19, behaviour 2: the leader's store is applied, then the key is invalidated
/// before the leader has its reply; a call that begins after the invalidation returned
/// must not take the leader's (older) value from this process's flight.
pub fn a_call_after_an_invalidation_never_joins_an_older_flight(f: &Fixture) {
    let key = f.key("order-flight-invalidate");
    let opts = f.locked();
    let cache_key = make_cache_key(&key);
    // The late caller uses the same backend handle as the leader: the flight is per
    // key and backend, so it could join the leader's flight.
    let backend = Arc::clone(f.probe.inner());
    let late_opts = opts.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let (late_tx, late_rx) = mpsc::channel();
    {
        let (key, opts, fired) = (key.clone(), late_opts, Arc::clone(&fired));
        let (backend, cache_key) = (Arc::clone(&backend), cache_key.clone());
        f.probe.after(move |op| {
            if op != "store_and_release" || fired.swap(true, Ordering::SeqCst) {
                return;
            }
            assert!(
                backend
                    .invalidate(cache_key.as_str(), &cache_key.lock_key())
                    .is_ok()
            );
            let (key, opts, late_tx) = (key.clone(), opts.clone(), late_tx.clone());
            std::thread::spawn(move || {
                let late = memoize(&key, &opts, || "after the invalidation".to_owned());
                let _ = late_tx.send(late);
            });
            // The late caller finishes by itself unless it joined this flight, which
            // lands only when this hook returns: then it shows after the timeout.
            let late = late_rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(late.ok().as_deref(), Some("after the invalidation"));
        });
    }
    let leader = memoize(&key, &opts, || "before the invalidation".to_owned());
    f.probe.after(|_| {});
    assert_eq!(leader, "before the invalidation");
    assert!(fired.load(Ordering::SeqCst), "the store was staged");
}

/// Issue 19, behaviour 5: under `cache_none = false` with `stale`, a refresh whose
/// function returns `None` (the entity was deleted) replaces the stored `Some`: the
/// caller gets `None`, and the old `Some` is never served again.
pub fn a_none_refresh_replaces_the_stale_some(f: &Fixture) {
    let key = f.key("order-none-refresh");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let first: Option<String> = call(
        &key,
        &opts,
        Entry::new(OptionOutcome, Inline).checked("f"),
        || Some("alive".to_owned()),
    );
    assert_eq!(first.as_deref(), Some("alive"));
    clock.advance(Duration::from_secs(11));
    let refreshed: Option<String> = call(
        &key,
        &opts,
        Entry::new(OptionOutcome, Inline).checked("f"),
        || None,
    );
    assert_eq!(refreshed, None, "the refresh's None is returned");
    for _ in 0..3 {
        clock.advance(Duration::from_secs(60));
        let again: Option<String> = call(
            &key,
            &opts,
            Entry::new(OptionOutcome, Inline).checked("f"),
            || None,
        );
        assert_eq!(
            again, None,
            "the deleted entity's Some is never served again"
        );
    }
}

/// The detached form of [`a_none_refresh_replaces_the_stale_some`]: the caller that
/// found the value stale gets it at once; once the background refresh computed `None`,
/// the `Some` is gone.
pub fn a_detached_none_refresh_replaces_the_stale_some(f: &Fixture) {
    let key = f.key("order-none-detached");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let first: Option<String> = call(
        &key,
        &opts,
        Entry::new(OptionOutcome, Detached).checked("f"),
        || Some("alive".to_owned()),
    );
    assert_eq!(first.as_deref(), Some("alive"));
    let before = f.stored(&key);
    clock.advance(Duration::from_secs(11));
    let stale: Option<String> = call(
        &key,
        &opts,
        Entry::new(OptionOutcome, Detached).checked("f"),
        || None,
    );
    assert_eq!(stale.as_deref(), Some("alive"), "the stale value, at once");
    wait_until("the background refresh replaced the value", || {
        f.stored(&key) != before
    });
    let after: Option<String> = call(
        &key,
        &opts,
        Entry::new(OptionOutcome, Detached).checked("f"),
        || None,
    );
    assert_eq!(after, None);
}

/// Issue 19, behaviour 6: an inline refresh that starts within `expire + stale` and
/// fails after that window closed returns its error, not the expired value.
pub fn a_refresh_that_fails_past_the_window_returns_its_error(f: &Fixture) {
    let key = f.key("order-late-failure");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let late: Result<String, &str> = try_memoize(&key, &opts, || {
        clock.advance(Duration::from_secs(3600 + 45));
        Err("the source is down")
    });
    assert_eq!(late, Err("the source is down"));

    // Within the window, a failed refresh still serves the stale value.
    let key = f.key("order-early-failure");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let early: Result<String, &str> = try_memoize(&key, &opts, || Err("the source is down"));
    assert_eq!(early.as_deref(), Ok("v1"));
}

/// The panicking form of [`a_refresh_that_fails_past_the_window_returns_its_error`]:
/// the panic reaches the caller once the stale value may no longer be served.
pub fn a_refresh_that_panics_past_the_window_panics(f: &Fixture) {
    let key = f.key("order-late-panic");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let late = catch_unwind(AssertUnwindSafe(|| {
        memoize(&key, &opts, || -> String {
            clock.advance(Duration::from_secs(3600 + 45));
            panic!("the source is down");
        })
    }));
    assert!(late.is_err(), "the expired value was returned: {late:?}");
    // The refresh failed after the value's life ended (timed when it failed): no
    // throttle mark is left for a value that is gone, and the lock goes back.
    assert!(
        f.probe
            .inner()
            .get(&make_cache_key(&key).refresh_key())
            .is_ok_and(|mark| mark.is_none()),
        "a throttle mark outlives its value"
    );
    assert_eq!(f.lock_token(&key), None, "the lock given back");
}

/// A value found after a long wait for the lock is judged at the time it is found, not
/// at the time the call began: a caller that waited while a value went past
/// `expire + stale` computes instead of returning it (issue 21: the core's time came
/// once, when the machine was built).
pub fn a_value_found_after_a_long_wait_is_judged_when_found(f: &Fixture) {
    let key = f.key("order-judged-late");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock)
        .stale(Duration::from_secs(1))
        .lock(crate::fast_lock());
    // A value stamped now (fresh for 10 s, servable 1 s more), as another process
    // would store it: made under another key, copied.
    let donor = f.key("order-judged-late-donor");
    assert_eq!(memoize(&donor, &opts, || "v1".to_owned()), "v1");
    let Some(v1) = f.stored(&donor) else {
        panic!("the donor value was stored");
    };
    let cache_key = make_cache_key(&key);
    let held = cache_memoize::CacheLock::for_key(&cache_key)
        .backend(Arc::clone(f.probe.inner()))
        .try_acquire();
    let Ok(Some(held)) = held else {
        panic!("cannot stage a holder: {held:?}");
    };
    let late = std::thread::scope(|s| {
        let attempts = lock_attempts(f, &key);
        let waiter = s.spawn(|| memoize(&key, &opts, || "recomputed".to_owned()));
        wait_until("the caller found the lock held", || {
            lock_attempts(f, &key) > attempts
        });
        // Time passes while the caller waits, then the value lands: however the
        // caller's retries fall, it finds the value already past its life.
        clock.advance(Duration::from_secs(20));
        assert!(
            f.probe
                .inner()
                .set(cache_key.as_str(), &v1, Duration::from_secs(3600))
                .is_ok()
        );
        drop(held);
        waiter.join().ok()
    });
    assert_eq!(
        late.as_deref(),
        Some("recomputed"),
        "a value past expire + stale when found was returned"
    );
}
