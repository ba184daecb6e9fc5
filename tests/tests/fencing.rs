//! Fencing tokens and the key's order of writes, with nothing kept per key beyond the
//! value and its lock: tokens grow across a restart without persistence and a
//! `FLUSHALL`; a token is ordered after the stored value's even when the clock is
//! behind it; a store older than the stored value is refused; and once every value and
//! lock has expired a key leaves nothing, in Redis (`DBSIZE`) and in `MemoryBackend`.
//! `invalidate` fences out every computation running when it returns: an unlocked one,
//! one that gave up on a busy lock, and an in-process flight a later caller would join
//! (also when its leader found a stale value and claims its refresh).
//! Every server here is private to its test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_memoize::{
    CacheBackend, CacheLock, LockClaim, LockOptions, MemoizeOptions, MemoryBackend, RedisBackend,
    make_cache_key, memoize, memoize_async, memoize_iter,
};
use cache_memoize_tests::freshness_suite::{ManualClock, stale_opts};
use cache_memoize_tests::server::{RedisCluster, RedisServer};
use cache_memoize_tests::{Fixture, current_thread_runtime, fast_lock, settle, wait_until};

fn connect(url: &str) -> Arc<dyn CacheBackend> {
    let backend = RedisBackend::builder([url])
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .connect();
    match backend {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to {url}: {err}"),
    }
}

fn unique(name: &str) -> String {
    format!("{name}:{}", uuid::Uuid::new_v4().simple())
}

/// The fencing token of one acquisition of `lock` (released at once), once the backend
/// answers (a restarted server may take a few calls to be reached again).
fn token(lock: &CacheLock) -> u64 {
    let mut token = None;
    wait_until("the lock is taken", || {
        token = lock
            .try_acquire()
            .ok()
            .flatten()
            .map(|guard| guard.fencing_token());
        token.is_some()
    });
    token.unwrap_or_default()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// The bytes of a memoized value written under the fencing token `fence`, as far as
/// the store steps read them: the envelope (magic `cmz`, format 6 = fenced bincode,
/// type fingerprint, version, checksum: 20 bytes), then the token (8 bytes, LE). The
/// rest (stamp, payload) is not read by them; a reader takes these bytes for a miss.
fn written_under(fence: u64) -> Vec<u8> {
    let mut bytes = b"cmz\x06".to_vec();
    bytes.extend_from_slice(&[0; 16]);
    bytes.extend_from_slice(&fence.to_le_bytes());
    bytes.extend_from_slice(&[0; 12]);
    bytes
}

#[test]
fn a_fencing_token_grows_across_a_restart_without_persistence() {
    let mut server = RedisServer::start();
    let backend = connect(&server.url());
    let lock = CacheLock::new(&unique("restarted")).backend(backend);
    let before = token(&lock);
    server.restart();
    let after = token(&lock);
    assert!(
        after > before,
        "the server forgot everything, yet {after} follows {before}"
    );
}

#[test]
fn a_fencing_token_grows_across_a_flushall() {
    let server = RedisServer::start();
    let backend = connect(&server.url());
    let lock = CacheLock::new(&unique("flushed")).backend(Arc::clone(&backend));
    let opts = MemoizeOptions::new().backend(backend);
    let _: u32 = memoize(&unique("value"), &opts, || 1);
    let before = token(&lock);
    let flushed: Result<(), _> = redis::cmd("FLUSHALL").query(&mut server.connection());
    assert!(flushed.is_ok(), "{flushed:?}");
    let after = token(&lock);
    assert!(after > before, "{after} follows {before}");
}

#[test]
fn a_memory_store_made_anew_still_hands_out_larger_tokens() {
    let name = unique("memory-restart");
    let first: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let before = token(&CacheLock::new(&name).backend(first));
    let second: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let after = token(&CacheLock::new(&name).backend(second));
    assert!(after > before, "{after} follows {before}");
}

/// The fencing token the memoized value at `key` was written under (see
/// [`written_under`]).
fn fence_of(backend: &Arc<dyn CacheBackend>, key: &str) -> u64 {
    let bytes = backend.get(key).ok().flatten().unwrap_or_default();
    bytes
        .get(20..28)
        .and_then(|field| field.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A value written under a token ahead of this clock (by a server whose clock ran
/// ahead, before a failover): the next acquisition is ordered after it, not by the
/// clock alone, and so is the next store and every acquisition after that.
fn a_token_follows_the_stored_value_when_the_clock_is_behind_it(backend: &Arc<dyn CacheBackend>) {
    let name = unique("ahead");
    let key = make_cache_key(&name);
    let ahead = now_micros() + 3_600_000_000;
    let set = backend.set(key.as_str(), &written_under(ahead), Duration::from_secs(60));
    assert!(set.is_ok(), "{set:?}");
    let lock = CacheLock::for_key(&key).backend(Arc::clone(backend));
    assert_eq!(token(&lock), ahead + 1);

    // The bytes read as a miss: computed and stored under a token after them.
    let opts = MemoizeOptions::new().backend(Arc::clone(backend));
    assert_eq!(memoize(&name, &opts, || 7_u32), 7);
    assert_eq!(memoize(&name, &opts, || 8_u32), 7, "stored");
    let stored = fence_of(backend, key.as_str());
    assert!(stored > ahead, "{stored} after {ahead}");
    let next = token(&lock);
    assert!(next > stored, "{next} after {stored}");
}

#[test]
fn memory_a_token_follows_the_stored_value_when_the_clock_is_behind_it() {
    a_token_follows_the_stored_value_when_the_clock_is_behind_it(
        &(Arc::new(MemoryBackend::new()) as _),
    );
}

#[test]
fn redis_a_token_follows_the_stored_value_when_the_clock_is_behind_it() {
    let server = RedisServer::start();
    a_token_follows_the_stored_value_when_the_clock_is_behind_it(&connect(&server.url()));
}

/// A holder whose lock still holds its UUID, but whose token is older than the stored
/// value's (a value written outside the lock's order): its store is refused and its
/// lock released. A stored value with no token (not a memoized value) is replaced.
fn a_store_older_than_the_stored_value_is_refused(backend: &Arc<dyn CacheBackend>) {
    let key = make_cache_key(&unique("older"));
    let lock_key = key.lock_key();
    let ttl = Duration::from_secs(60);
    let mut claim = LockClaim {
        key: &lock_key,
        token: b"holder",
        ttl,
        value_key: key.as_str(),
        fence: 0,
    };
    let Ok(Some(fence)) = backend.take_lock(&claim) else {
        panic!("a free lock is taken");
    };
    claim.fence = fence;
    let newer = written_under(fence + 1);
    assert!(backend.set(key.as_str(), &newer, ttl).is_ok());
    let stored = backend.store_and_release(key.as_str(), b"older", ttl, &claim);
    assert!(matches!(stored, Ok(false)), "{stored:?}");
    assert_eq!(backend.get(key.as_str()).ok().flatten(), Some(newer));
    assert_eq!(backend.get(&lock_key).ok().flatten(), None, "released");

    let Ok(Some(fence)) = backend.take_lock(&claim) else {
        panic!("the released lock is taken again");
    };
    assert!(fence > claim.fence + 1, "after the stored value's token");
    claim.fence = fence;
    assert!(backend.set(key.as_str(), b"foreign", ttl).is_ok());
    let stored = backend.store_and_release(key.as_str(), b"ours", ttl, &claim);
    assert!(matches!(stored, Ok(true)), "{stored:?}");
    assert_eq!(
        backend.get(key.as_str()).ok().flatten(),
        Some(b"ours".to_vec())
    );
}

#[test]
fn memory_a_store_older_than_the_stored_value_is_refused() {
    a_store_older_than_the_stored_value_is_refused(&(Arc::new(MemoryBackend::new()) as _));
}

#[test]
fn redis_a_store_older_than_the_stored_value_is_refused() {
    let server = RedisServer::start();
    a_store_older_than_the_stored_value_is_refused(&connect(&server.url()));
}

/// How long every value and lock below lives.
const LIFE: Duration = Duration::from_millis(300);

/// Uses a key every way that writes to the backend: a locked miss, an unlocked miss, a
/// forced refresh, an invalidation, a memoized iterator, and a lock of its own (one
/// released, one left to expire).
fn use_every_write_path(backend: &Arc<dyn CacheBackend>) {
    let lock = LockOptions {
        expire: LIFE,
        retry: Duration::from_millis(10),
        ..LockOptions::default()
    };
    let plain = MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .expire(LIFE);
    let locked = plain.clone().lock(lock);
    let key = unique("paths");
    assert_eq!(memoize(&key, &locked, || 1_u32), 1);
    assert_eq!(memoize(&unique("unlocked"), &plain, || 2_u32), 2);
    let forced = locked.clone().force_overwrite(true);
    assert_eq!(memoize(&key, &forced, || 3_u32), 3);
    let invalidated = make_cache_key(&key);
    let voided = backend.invalidate(invalidated.as_str(), &invalidated.lock_key());
    assert!(voided.is_ok(), "{voided:?}");
    assert_eq!(memoize(&key, &locked, || 4_u32), 4);
    let items: Vec<u32> = memoize_iter(&unique("iter"), &locked, || 0..100_u32).collect();
    assert_eq!(items.len(), 100);
    let own = CacheLock::new(&unique("own"))
        .backend(Arc::clone(backend))
        .expire(LIFE);
    assert_eq!(
        own.acquire()
            .map(|guard| guard.release().ok())
            .ok()
            .flatten(),
        Some(true)
    );
    match own.acquire() {
        Ok(guard) => std::mem::forget(guard),
        Err(err) => panic!("a released lock is taken again: {err}"),
    }
}

/// Every key on the server behind `conn` lives no longer than its value or lock, and
/// once they have expired none is left (`DBSIZE` 0).
fn assert_nothing_outlives_the_values_and_locks(conn: &mut redis::Connection) {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap_or_default();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(conn).unwrap_or(-3);
        let life = i64::try_from(LIFE.as_millis()).unwrap_or(i64::MAX);
        // -2: it expired between KEYS and PTTL; 0: it expires now (a loaded machine
        // comes here late). Never -1 (no TTL) nor past the value's or lock's life.
        assert!(
            ttl == -2 || (0..=life).contains(&ttl),
            "{key} lives {ttl} ms, beyond its value and lock ({life} ms)"
        );
    }
    wait_until("every key has expired", || {
        // A scan reclaims the expired keys it passes, so the count is exact at once.
        let _: Result<redis::Value, _> =
            redis::cmd("SCAN").arg(0).arg("COUNT").arg(1000).query(conn);
        redis::cmd("DBSIZE")
            .query::<i64>(conn)
            .is_ok_and(|n| n == 0)
    });
}

#[test]
fn a_redis_key_leaves_no_key_once_its_values_and_locks_expired() {
    let server = RedisServer::start();
    let backend = connect(&server.url());
    use_every_write_path(&backend);
    let mut conn = server.connection();
    let size: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap_or(0);
    assert!(size > 0, "the paths wrote values");
    assert_nothing_outlives_the_values_and_locks(&mut conn);
}

/// On a cluster (the scripts read the value and take the lock in one slot): the same
/// order of writes, and nothing left on any node.
#[test]
fn on_a_cluster_tokens_follow_the_stored_value_and_nothing_is_left() {
    let cluster = RedisCluster::start();
    let backend: Arc<dyn CacheBackend> = match RedisBackend::builder(cluster.urls())
        .cluster()
        .response_timeout(Duration::from_secs(5))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    };
    a_token_follows_the_stored_value_when_the_clock_is_behind_it(&backend);
    a_store_older_than_the_stored_value_is_refused(&backend);
    for node in 0..3 {
        // The two scenarios above store for a minute: they go first.
        let _: Result<(), _> = redis::cmd("FLUSHALL").query(&mut cluster.connection(node));
    }
    use_every_write_path(&backend);
    for node in 0..3 {
        assert_nothing_outlives_the_values_and_locks(&mut cluster.connection(node));
    }
}

#[test]
fn a_memory_key_leaves_no_entry_once_its_values_and_locks_expired() {
    let store = Arc::new(MemoryBackend::new());
    let backend: Arc<dyn CacheBackend> = Arc::clone(&store) as _;
    use_every_write_path(&backend);
    assert!(!store.is_empty(), "the paths wrote values");
    wait_until("every entry has expired", || store.is_empty());
    assert_eq!(store.len(), 0);
}

/// `invalidate`'s contract: "a computation running for `key` right now cannot store
/// its (older) value afterwards". Without `lock` (the default), it does.
#[test]
fn an_unlocked_computation_does_not_store_across_an_invalidation() {
    let f = Fixture::memory();
    let key = f.key("unlocked-invalidated");
    let opts = f.opts();
    let cache_key = make_cache_key(&key);
    let computed: String = memoize(&key, &opts, || {
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        "before the invalidation".to_owned()
    });
    assert_eq!(computed, "before the invalidation");
    assert_eq!(
        memoize(&key, &opts, || "after".to_owned()),
        "after",
        "a value computed before the invalidation is served after it"
    );
}

/// The same for a locked call that gave up on the lock (not blocking): it computes
/// "without the lock" and stores unconditionally, across the invalidation.
#[test]
fn a_lock_busy_computation_does_not_store_across_an_invalidation() {
    let f = Fixture::memory();
    let key = f.key("busy-invalidated");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        blocking: false,
        ..fast_lock()
    });
    let cache_key = make_cache_key(&key);
    // Another holder has the lock.
    assert_eq!(
        f.probe
            .inner()
            .add(
                &cache_key.lock_key(),
                b"another holder",
                Duration::from_secs(60)
            )
            .ok(),
        Some(true)
    );
    let computed: String = memoize(&key, &opts, || {
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        "before the invalidation".to_owned()
    });
    assert_eq!(computed, "before the invalidation");
    assert_eq!(
        memoize(&key, &opts, || "after".to_owned()),
        "after",
        "a value computed before the invalidation is served after it"
    );
}

/// Single-threaded runtime, so the interleaving is exact: the leader computes (pending),
/// the key is invalidated, a new caller starts and joins the leader's flight, the
/// leader finishes: its store is refused, but the new caller gets its value.
#[test]
fn a_caller_starting_after_invalidate_never_gets_a_value_computed_before_it() {
    let f = Fixture::memory();
    let key = f.key("coalesced-across-invalidate");
    let opts = f.locked();
    let cache_key = make_cache_key(&key);
    let rt = current_thread_runtime();
    rt.block_on(async {
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async move {
                    let _ = finish_rx.await;
                    "computed before the invalidation".to_owned()
                })
                .await
            })
        };
        settle().await; // the leader is computing, under the lock
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        let late = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async { "computed after".to_owned() }).await
            })
        };
        settle().await; // the late caller has started (after the invalidation)
        let _ = finish.send(());
        assert_eq!(
            leader.await.ok().as_deref(),
            Some("computed before the invalidation")
        );
        // The leader's store was refused (the late caller may have stored its own
        // value meanwhile: never the leader's).
        assert!(
            !f.stored(&key)
                .is_some_and(|bytes| bytes.windows(6).any(|w| w == b"before")),
            "the leader's store was refused"
        );
        assert_eq!(
            late.await.ok().as_deref(),
            Some("computed after"),
            "a call begun after invalidate() returned got the value computed before it"
        );
    });
}

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
    let key = f.key("flight-stale");
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
