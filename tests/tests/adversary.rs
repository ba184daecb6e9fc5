//! Adversarial review of issue 19 ("one order of writes per key"): each test stages one
//! interleaving at exact steps (the probe's hook, channels) and asserts what a correct
//! cache returns. A failing test here is a bug found, documented in its doc comment:
//! the interleaving, and the wrong value returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::{Clock, MemoryBackend, make_cache_key, memoize};
use cache_memoize_tests::Fixture;
use cache_memoize_tests::freshness_suite::{ManualClock, stale_opts};

/// A coalescing leader proves its value by the read that found it, but a follower's
/// right to it is judged against the leader's step count when the leader *ends*: when
/// the value found is stale (or drawn early by `beta`), the leader sends one more step
/// (`ClaimRefresh`) after the read, so a follower that joined after the read was sent
/// might still take the value.
///
/// Interleaving (one process, `lock` + `stale`):
/// 1. leader L: first `GET` misses; the key is then written (v1, already stale on L's
///    clock: another process's store, or a clock behind);
/// 2. L joins the flight as leader, sends `GET_OR_LOCK` (step counted), finds v1;
/// 3. `invalidate(key)` runs and returns;
/// 4. caller C begins: its `GET` misses (invalidated), it joins L's flight;
/// 5. L claims the refresh (one more step counted), lands v1, ends.
///
/// Expected: C, begun after the invalidation returned, does not get v1 (it runs the
/// sequence again). Got: C returns v1 from L's flight (4 runs in 6 on `MemoryBackend`;
/// in the others C was turned away). Note: the order suite's
/// `a_call_after_an_invalidation_never_joins_an_older_flight` gives its late caller
/// another backend handle (`probe.inner()`), hence another flight key, so it cannot
/// join the leader's flight and passes whatever the flight does.
#[test]
fn a_follower_joining_after_a_stale_leaders_read_never_gets_a_value_from_before_an_invalidation() {
    let f = Fixture::memory();
    let key = f.key("adv-flight-stale");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(&f, &clock);
    let cache_key = make_cache_key(&key);
    let inner = Arc::clone(f.probe.inner());

    // v1, as another process stored it; then the key is empty again.
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    let v1 = f.stored(&key).unwrap_or_default();
    assert!(!v1.is_empty());
    assert!(
        inner
            .invalidate(cache_key.as_str(), &cache_key.lock_key())
            .is_ok()
    );
    clock.advance(Duration::from_secs(11));

    let leader = std::thread::current().id();
    let (late_tx, late_rx) = mpsc::channel::<String>();
    let late_result = Arc::new(std::sync::Mutex::new(None::<mpsc::Receiver<String>>));
    let joined_late = Arc::new(AtomicBool::new(false));
    {
        let (inner, cache_key, v1) = (Arc::clone(&inner), cache_key.clone(), v1.clone());
        let (key, opts) = (key.clone(), opts.clone());
        let late_tx = std::sync::Mutex::new(Some(late_tx));
        let late_result = Arc::clone(&late_result);
        let joined_late = Arc::clone(&joined_late);
        let mut late_rx = Some(late_rx);
        f.probe.after(move |op| {
            if std::thread::current().id() != leader {
                return;
            }
            match op {
                // Step 1: after L's first read missed, v1 lands (stale on L's clock).
                "get" => {
                    assert!(
                        inner
                            .set(cache_key.as_str(), &v1, Duration::from_secs(3600))
                            .is_ok()
                    );
                }
                // Step 3 and 4: L's GET_OR_LOCK found v1; invalidate, then C begins.
                "get_or_lock" => {
                    assert!(
                        inner
                            .invalidate(cache_key.as_str(), &cache_key.lock_key())
                            .is_ok()
                    );
                    let Some(tx) = late_tx.lock().ok().and_then(|mut tx| tx.take()) else {
                        return;
                    };
                    let (key, opts) = (key.clone(), opts.clone());
                    std::thread::spawn(move || {
                        let late = memoize(&key, &opts, || "after the invalidation".to_owned());
                        let _ = tx.send(late);
                    });
                    // C finishes by itself unless it joined L's flight (it then waits
                    // for L, which waits here).
                    let Some(rx) = late_rx.take() else { return };
                    match rx.recv_timeout(Duration::from_secs(2)) {
                        Ok(late) => {
                            let (tx, rx) = mpsc::channel();
                            let _ = tx.send(late);
                            *late_result
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
                        }
                        Err(_) => {
                            joined_late.store(true, Ordering::SeqCst);
                            *late_result
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
                        }
                    }
                }
                _ => {}
            }
        });
    }
    let _ = memoize(&key, &opts, || "L's refresh".to_owned());
    f.probe.after(|_| {});
    let rx = late_result
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let late = rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(10)).ok());
    assert!(late.is_some(), "the late caller returned");
    assert_ne!(
        late.as_deref(),
        Some("v1"),
        "a call begun after invalidate() returned got a value stored before it \
         (joined the leader's flight: {})",
        joined_late.load(Ordering::SeqCst)
    );
}

/// The fail-safe throttle's mark (`_refresh_:{key}`) lives `fail_safe`, whatever is
/// left of the value it throttles: with the defaults (`fail_safe` = a tenth of
/// `expire`, at least 1 s) and any `stale` shorter than that, a refresh that fails
/// near the end of the window leaves the mark behind the value.
///
/// Interleaving (real time; `expire` 200 ms, `stale` 800 ms, default `fail_safe` 1 s):
/// 1. v1 stored (TTL 1 s);
/// 2. past 200 ms, a call finds v1 stale; its inline refresh returns `Err`: the mark
///    is written with TTL 1 s, from then;
/// 3. v1 expires (1 s after it was stored).
///
/// Expected (README "What the cache writes to Redis": everything with "a TTL no
/// longer than the value's own", "a key whose value and lock have expired leaves
/// nothing behind"; issue 19 "Done when": 0 entries in `MemoryBackend`): `len() == 0`.
/// Got: 1 (the mark, for up to `fail_safe` more).
#[test]
fn a_throttle_mark_never_outlives_the_value_it_throttles() {
    let backend = Arc::new(MemoryBackend::new());
    let f = Fixture::new(backend.clone());
    let key = f.key("adv-mark-outlives");
    let opts = f
        .opts()
        .expire(Duration::from_millis(200))
        .stale(Duration::from_millis(800));
    let stored_at = std::time::Instant::now();
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    cache_memoize_tests::wait_until("v1 is stale", || {
        stored_at.elapsed() >= Duration::from_millis(250)
    });
    let served: Result<String, &str> =
        cache_memoize::try_memoize(&key, &opts, || Err("the source is down"));
    assert_eq!(served.as_deref(), Ok("v1"), "stale-if-error");
    let mark = make_cache_key(&key).refresh_key();
    assert!(
        f.probe.inner().get(&mark).is_ok_and(|m| m.is_some()),
        "the failed refresh left its mark"
    );
    cache_memoize_tests::wait_until("v1 expired", || f.stored(&key).is_none());
    assert_eq!(
        backend.len(),
        0,
        "the value and its lock are gone, but the key still holds an entry: {:?}",
        f.probe
            .inner()
            .get(&mark)
            .ok()
            .flatten()
            .map(|_| mark.clone())
    );
}

/// The bound the README states: a value's freshness and its TTL start when it is
/// *stored*, so a value whose computation took `d` (it read its inputs when it began)
/// is returned until `d + expire + stale` after its computation began, never later.
/// (The review found the README counting from the computation's start; the README now
/// says "after it was stored".)
#[test]
fn a_value_is_served_until_expire_plus_stale_after_its_store() {
    let f = Fixture::memory();
    let key = f.key("adv-bound-start");
    let clock = Arc::new(ManualClock::default());
    let opts = f
        .opts()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(10))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let v1 = memoize(&key, &opts, || {
        clock.advance(Duration::from_secs(15));
        "v1 (inputs read at t)".to_owned()
    });
    assert_eq!(v1, "v1 (inputs read at t)");
    clock.advance(Duration::from_secs(6));
    let fresh = cache_memoize::memoize_detached(&key, &opts, || "recomputed".to_owned());
    assert_eq!(
        fresh, "v1 (inputs read at t)",
        "fresh for `expire` from its store"
    );
    clock.advance(Duration::from_secs(15));
    let gone = cache_memoize::memoize_detached(&key, &opts, || "recomputed".to_owned());
    assert_eq!(
        gone, "recomputed",
        "never past `expire + stale` from its store"
    );
}

/// The throttle's mark belongs to the key, not to the value whose refresh failed, and
/// nothing that stores a newer value clears it: a forced refresh (or a miss) stores
/// v2, and when v2 goes stale its first refresh, which never failed, is throttled by
/// v1's failure for the rest of `fail_safe`.
///
/// Interleaving (injected clock; `expire` 10 s, `stale` 1 h, `fail_safe` 1 h):
/// 1. v1 goes stale; its inline refresh fails: mark until +1 h;
/// 2. `refresh(..)` stores v2 (it ignores the mark, as documented);
/// 3. 11 s later v2 is stale; a call refreshes inline with a function that works.
///
/// Expected (README: the mark throttles "after a failed refresh ... before a retry"):
/// the refresh runs and the call returns "v3". Got: the refresh backs off on v1's mark
/// and the call returns the stale "v2"; every refresh of the key is skipped for up to
/// an hour although none failed since v2 was stored.
#[test]
fn a_throttle_mark_of_an_earlier_value_never_throttles_a_later_values_refresh() {
    let f = Fixture::memory();
    let key = f.key("adv-mark-later-value");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(&f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let failed: Result<String, &str> =
        cache_memoize::try_memoize(&key, &opts, || Err("the source is down"));
    assert_eq!(failed.as_deref(), Ok("v1"));
    let forced = cache_memoize::refresh(|| memoize(&key, &opts, || "v2".to_owned()));
    assert_eq!(forced, "v2");
    clock.advance(Duration::from_secs(11));
    let refreshed: Result<String, &str> =
        cache_memoize::try_memoize(&key, &opts, || Ok("v3".to_owned()));
    assert_eq!(refreshed.as_deref(), Ok("v3"));
}
