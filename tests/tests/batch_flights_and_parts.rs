//! Batches sent as one composite op (`Op::Many`): a follower joined during a batch's
//! loader, held locks answered `Watched` when parts go one by one, a failing part beside
//! others, and an encrypted cluster batch's slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cache_memoize::{
    AsyncBackendCore, BackendCore, BoxFuture, CacheBackend, Error, GetOrLock, LockOptions,
    MemoizeOptions, MemoryBackend, Op, Reply, Store, make_cache_key, memoize_many,
};

fn keys(name: &str, ids: &[u32]) -> Vec<(String, u32)> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    ids.iter()
        .map(|id| (format!("{name}:{run}:{id}"), *id))
        .collect()
}

fn users(ids: &[u32]) -> HashMap<u32, String> {
    ids.iter().map(|id| (*id, format!("user {id}"))).collect()
}

/// A store whose `add` of one lock key fails (a transient error on one key).
#[derive(Default)]
struct FailsOneLock {
    map: Mutex<HashMap<String, Vec<u8>>>,
    failing_lock: Mutex<String>,
    adds: AtomicUsize,
}

impl FailsOneLock {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for FailsOneLock {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.map().get(key).cloned())
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let map = self.map();
        Ok(keys.iter().map(|key| map.get(*key).cloned()).collect())
    }
    fn set(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), Error> {
        self.map().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn add(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<bool, Error> {
        self.adds.fetch_add(1, Ordering::SeqCst);
        if *self
            .failing_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            == key
        {
            return Err(Error::backend("add", key, "this key's shard is down"));
        }
        let mut map = self.map();
        let absent = !map.contains_key(key);
        if absent {
            map.insert(key.to_owned(), value.to_vec());
        }
        Ok(absent)
    }
    fn delete(&self, key: &str) -> Result<(), Error> {
        self.map().remove(key);
        Ok(())
    }
    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
        let mut map = self.map();
        let ours = map.get(key).is_some_and(|value| value == expected);
        Ok(ours && map.remove(key).is_some())
    }
    fn compare_and_extend(
        &self,
        key: &str,
        expected: &[u8],
        _ttl: Duration,
    ) -> Result<bool, Error> {
        Ok(self.map().get(key).is_some_and(|value| value == expected))
    }
}

/// A `Store` (emulated `Op::Many`) whose lock attempt fails for one element only: the
/// other element's lock, taken by the same composite, must not be stranded (the
/// composite must not turn one part's failure into every part's: the element whose
/// lock was taken would then fail open, not store, and leave its lock to expire, so
/// every other caller of that key waits out the lock's expiry and computes it again).
#[test]
fn one_failed_lock_part_does_not_strand_the_other_parts_locks() {
    let store = Arc::new(FailsOneLock::default());
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&store) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        });
    let batch = keys("onefails", &[1, 2]);
    let first = make_cache_key(&batch[0].0);
    let second = make_cache_key(&batch[1].0);
    *store
        .failing_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = second.lock_key();
    let got = memoize_many(batch.clone(), &opts, |ids: &[u32]| users(ids));
    assert_eq!(got, users(&[1, 2]), "fails open: every element computed");
    let map = store.map();
    assert!(
        !map.contains_key(&first.lock_key()),
        "the lock of element 1, taken by the composite, is stranded"
    );
    assert!(
        map.contains_key(first.as_str()),
        "element 1 was computed under its lock and is stored"
    );
}

/// A backend that, as `RedisBackend` on a cluster does for a batch over several slots,
/// refuses `Op::Many` (so the caller runs the parts one by one, `Part::run`), and
/// answers a lock found held as a backend that wakes waiters does: `Reply::Watched`.
struct WatchedWithoutMany {
    inner: Arc<dyn CacheBackend>,
    waits: AtomicUsize,
}

impl BackendCore for WatchedWithoutMany {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        match op {
            Op::Many { .. } => Err(op.unsupported()),
            Op::GetOrLock { .. } => match self.inner.execute(op)? {
                Reply::Found(GetOrLock::Held) => Ok(Reply::Watched {
                    expires_in: Duration::from_secs(30),
                }),
                other => Ok(other),
            },
            Op::WaitForRelease { .. } => {
                self.waits.fetch_add(1, Ordering::SeqCst);
                self.inner.execute(op)
            }
            op => self.inner.execute(op),
        }
    }
}

impl AsyncBackendCore for WatchedWithoutMany {
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
        Box::pin(std::future::ready(self.execute(op)))
    }
}

/// `Op::Many`'s rule, sent one by one: no lock is taken after the first one found held.
/// A held lock answered `Reply::Watched` (what `RedisBackend` answers when its wake-up
/// hub listens, e.g. on a cluster, where a batch over several slots is refused and
/// sent one by one) must block the later parts as `Found(Held)` does; otherwise the
/// batch holds a lock later in the order than the one it waits for, and two
/// overlapping batches wait on each other (until their lock timeout, then both compute).
#[test]
fn a_watched_held_lock_blocks_the_later_lock_parts_sent_one_by_one() {
    let wrapper = Arc::new(WatchedWithoutMany {
        inner: Arc::new(MemoryBackend::new()),
        waits: AtomicUsize::new(0),
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&wrapper) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        });
    let batch = keys("watched", &[1, 2, 3]);
    let held = make_cache_key(&batch[1].0).lock_key();
    let third = make_cache_key(&batch[2].0).lock_key();
    let inner = Arc::clone(&wrapper.inner);
    assert_eq!(
        inner
            .add(&held, b"another caller", Duration::from_secs(30))
            .ok(),
        Some(true)
    );
    std::thread::scope(|scope| {
        let running = scope.spawn(|| memoize_many(batch.clone(), &opts, |ids: &[u32]| users(ids)));
        cache_memoize_tests::wait_until("the batch waits for element 2", || {
            wrapper.waits.load(Ordering::SeqCst) > 0
        });
        let third_locked = inner.get(&third).ok().flatten().is_some();
        assert_eq!(inner.delete(&held).ok(), Some(()));
        let got = running.join().ok();
        assert_eq!(got, Some(users(&[1, 2, 3])));
        assert!(
            !third_locked,
            "element 3's lock was taken while the batch waited for element 2's"
        );
    });
}

#[cfg(feature = "encryption")]
/// Redis Cluster's hash slot of `key` (CRC16 XMODEM of its hash tag, or of the key).
fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc & 0x3fff
}

/// On an encrypted cluster, a batch whose keys share a slot as written but not as
/// stored (their hash tags' contents are replaced by keyed hashes): the check that
/// lets a batch's parts go as one script must judge the stored names, or the script
/// is refused by the cluster (`CROSSSLOT`), every element fails open, nothing is
/// stored, and the same batch computes everything again, every time.
#[cfg(feature = "encryption")]
#[test]
fn an_encrypted_cluster_batch_judges_its_slot_by_the_stored_names() {
    let cluster = cache_memoize_tests::server::RedisCluster::start();
    let backend = match cache_memoize::RedisBackend::builder(cluster.urls())
        .cluster()
        .response_timeout(Duration::from_secs(10))
        .encryption(cache_memoize::Encryption::new([0x4e; 32]).key(1, [0x11; 32]))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let first = format!("pair:{run}:0");
    let want = slot(make_cache_key(&first).as_str());
    let second = (1..1_000_000)
        .map(|i| format!("pair:{run}:{i}"))
        .find(|key| slot(make_cache_key(key).as_str()) == want)
        .unwrap_or_default();
    let batch = vec![(first, 0_u32), (second, 1_u32)];
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        });
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        let got = memoize_many(batch.clone(), &opts, |ids: &[u32]| {
            calls.fetch_add(1, Ordering::SeqCst);
            users(ids)
        });
        assert_eq!(got, users(&[0, 1]));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "computed once, then read: the batch's lock attempts and stores landed"
    );
}

/// A tagged batch's element computed before `invalidate_tag` (the loader runs across
/// it): a batch begun after the invalidation (following the first one's flight, or
/// reading its store) must not get that value.
#[test]
fn a_batch_begun_after_invalidate_tag_never_gets_the_value_computed_before_it() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let batch = keys("tagrace", &[1, 2]);
    let tag = format!("tag:{}", batch[0].0);
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend))
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        })
        .tags([tag.clone()]);
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (batch, opts) = (&batch, &opts);
        let old = s.spawn(move || {
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                ids.iter()
                    .map(|id| (*id, format!("old {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        assert!(started.recv().is_ok(), "the first loader runs");
        assert!(cache_memoize::invalidate_tag_in(&*backend, &tag).is_ok());
        let (begun_tx, begun) = std::sync::mpsc::channel();
        let new = s.spawn(move || {
            let _ = begun_tx.send(());
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                ids.iter()
                    .map(|id| (*id, format!("new {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        assert!(begun.recv().is_ok());
        let _ = go.send(());
        let old = old.join().ok().unwrap_or_default();
        assert_eq!(old.get(&1).map(String::as_str), Some("old 1"));
        let new = new.join().ok().unwrap_or_default();
        assert_eq!(new.get(&1).map(String::as_str), Some("new 1"));
        assert_eq!(new.get(&2).map(String::as_str), Some("new 2"));
    });
}

/// A batch element computed without storing (its read failed: fail open) shares its
/// value with this process's followers; a follower that joined while the loader ran,
/// after an invalidation, must not take it (a single call marks its computation's
/// start before computing, so such a follower runs again; a batch marked it only after
/// its loader returned, so the follower took the value computed before it began).
#[test]
fn a_follower_joined_during_a_batch_loader_after_an_invalidation_does_not_take_its_value() {
    let probe = Arc::new(cache_memoize_tests::Probe::new(Arc::new(
        MemoryBackend::new(),
    )));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        });
    let batch = keys("failopen", &[1]);
    let stored = make_cache_key(&batch[0].0);
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    probe.set_failing(true);
    std::thread::scope(|s| {
        let (batch, opts) = (&batch, &opts);
        let old = s.spawn(move || {
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                ids.iter()
                    .map(|id| (*id, format!("old {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        assert!(
            started.recv().is_ok(),
            "the first loader runs (failed open)"
        );
        probe.set_failing(false);
        assert!(
            probe
                .inner()
                .invalidate(stored.as_str(), &stored.lock_key())
                .is_ok()
        );
        probe.clear();
        let new = s.spawn(move || {
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                ids.iter()
                    .map(|id| (*id, format!("new {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        // Its read done, it joins the first batch's flight at once (nothing to observe
        // it by: a short grace period for the join).
        cache_memoize_tests::wait_until("the second batch has read", || {
            !probe.keys_done_of("get_many").is_empty()
        });
        std::thread::sleep(Duration::from_millis(50));
        let _ = go.send(());
        let old = old.join().ok().unwrap_or_default();
        assert_eq!(old.get(&1).map(String::as_str), Some("old 1"));
        let new = new.join().ok().unwrap_or_default();
        assert_eq!(
            new.get(&1).map(String::as_str),
            Some("new 1"),
            "begun after the invalidation, it got the value computed before it"
        );
    });
}

/// The same, for a batch element computed after its wait for the lock timed out shares its
/// value with this process's followers; a follower that joined while the loader ran,
/// after an invalidation, must not take it (a single call marks its computation's
/// start before computing, so such a follower runs again; a batch marked it only after
/// its loader returned, so the follower took the value computed before it began).
#[test]
fn a_follower_joined_during_a_timed_out_batch_loader_after_an_invalidation_does_not_take_its_value()
{
    let probe = Arc::new(cache_memoize_tests::Probe::new(Arc::new(
        MemoryBackend::new(),
    )));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            timeout: Some(Duration::from_millis(100)),
            ..LockOptions::default()
        });
    let batch = keys("failopen", &[1]);
    let stored = make_cache_key(&batch[0].0);
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    assert_eq!(
        probe
            .inner()
            .add(
                &stored.lock_key(),
                b"another caller",
                Duration::from_secs(30)
            )
            .ok(),
        Some(true)
    );
    std::thread::scope(|s| {
        let (batch, opts) = (&batch, &opts);
        let old = s.spawn(move || {
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                ids.iter()
                    .map(|id| (*id, format!("old {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        assert!(
            started.recv().is_ok(),
            "the first loader runs (its wait for the lock timed out)"
        );
        assert!(
            probe
                .inner()
                .invalidate(stored.as_str(), &stored.lock_key())
                .is_ok()
        );
        probe.clear();
        let new = s.spawn(move || {
            memoize_many(batch.clone(), opts, |ids: &[u32]| {
                ids.iter()
                    .map(|id| (*id, format!("new {id}")))
                    .collect::<HashMap<_, _>>()
            })
        });
        // Its read done, it joins the first batch's flight at once (nothing to observe
        // it by: a short grace period for the join).
        cache_memoize_tests::wait_until("the second batch has read", || {
            !probe.keys_done_of("get_many").is_empty()
        });
        std::thread::sleep(Duration::from_millis(50));
        let _ = go.send(());
        let old = old.join().ok().unwrap_or_default();
        assert_eq!(old.get(&1).map(String::as_str), Some("old 1"));
        let new = new.join().ok().unwrap_or_default();
        assert_eq!(
            new.get(&1).map(String::as_str),
            Some("new 1"),
            "begun after the invalidation, it got the value computed before it"
        );
    });
}

/// The single-call form of the case above (holds: a single call marks its
/// computation's start before computing).
#[test]
fn a_follower_joined_during_a_timed_out_single_computation_after_an_invalidation_does_not_take_its_value()
 {
    let probe = Arc::new(cache_memoize_tests::Probe::new(Arc::new(
        MemoryBackend::new(),
    )));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            timeout: Some(Duration::from_millis(100)),
            ..LockOptions::default()
        });
    let key = keys("single", &[1])[0].0.clone();
    let stored = make_cache_key(&key);
    assert_eq!(
        probe
            .inner()
            .add(
                &stored.lock_key(),
                b"another caller",
                Duration::from_secs(30)
            )
            .ok(),
        Some(true)
    );
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (key, opts) = (&key, &opts);
        let old = s.spawn(move || {
            cache_memoize::memoize(key, opts, || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                "old".to_owned()
            })
        });
        assert!(started.recv().is_ok());
        assert!(
            probe
                .inner()
                .invalidate(stored.as_str(), &stored.lock_key())
                .is_ok()
        );
        probe.clear();
        let new = s.spawn(move || cache_memoize::memoize(key, opts, || "new".to_owned()));
        cache_memoize_tests::wait_until("the second call has read", || {
            !probe.keys_done_of("get").is_empty() || !probe.keys_done_of("get_many").is_empty()
        });
        std::thread::sleep(Duration::from_millis(50));
        let _ = go.send(());
        assert_eq!(old.join().ok().as_deref(), Some("old"));
        assert_eq!(new.join().ok().as_deref(), Some("new"));
    });
}
