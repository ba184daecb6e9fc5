//! An adversarial review of batch memoization (issue 25): what the behaviour suite
//! does not stage (a loader that panics, an invalidation during the loader call, a
//! cancelled async batch, a backend whose batch read answers the wrong number of keys,
//! two elements of one key, a single-key call of the same key).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, Error, LockOptions, MemoizeOptions, MemoryBackend, Store, make_cache_key,
    memoize, memoize_many, memoize_many_async,
};
use cache_memoize_tests::Probe;

fn memory() -> Arc<Probe> {
    Arc::new(Probe::new(Arc::new(MemoryBackend::new())))
}

fn locked(backend: &Arc<Probe>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        })
}

fn keys(name: &str, ids: &[u32]) -> Vec<(String, u32)> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    ids.iter()
        .map(|id| (format!("{name}:{run}:{id}"), *id))
        .collect()
}

fn users(ids: &[u32]) -> HashMap<u32, String> {
    ids.iter().map(|id| (*id, format!("user {id}"))).collect()
}

fn lock_of(backend: &Arc<Probe>, key: &str) -> Option<Vec<u8>> {
    backend
        .inner()
        .get(&make_cache_key(key).lock_key())
        .ok()
        .flatten()
}

/// A loader that panics: every lock the batch took goes back with the unwinding, and
/// the next batch computes the elements (no waiter is left behind a dead lock).
#[test]
fn a_panicking_loader_releases_every_lock() {
    let backend = memory();
    let opts = locked(&backend);
    let batch = keys("panic", &[1, 2, 3]);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        memoize_many(batch.clone(), &opts, |_: &[u32]| -> HashMap<u32, String> {
            panic!("the loader fails")
        })
    }));
    assert!(panicked.is_err());
    for (key, _) in &batch {
        assert_eq!(lock_of(&backend, key), None, "lock of {key} released");
    }
    let calls = AtomicUsize::new(0);
    let got = memoize_many(batch, &opts, |ids: &[u32]| {
        calls.fetch_add(1, Ordering::SeqCst);
        users(ids)
    });
    assert_eq!(got, users(&[1, 2, 3]));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// An element invalidated while the loader runs: its store is refused (the value was
/// computed before the invalidation), so the next call computes it again.
#[test]
fn an_element_invalidated_during_the_loader_is_not_stored() {
    let backend = memory();
    let opts = locked(&backend);
    let batch = keys("inval", &[1, 2]);
    let first = make_cache_key(&batch[0].0);
    let inner = Arc::clone(backend.inner());
    let got = memoize_many(batch.clone(), &opts, |ids: &[u32]| {
        assert!(inner.invalidate(first.as_str(), &first.lock_key()).is_ok());
        ids.iter().map(|id| (*id, format!("old {id}"))).collect()
    });
    assert_eq!(got.get(&1).map(String::as_str), Some("old 1"));
    let again = memoize_many(batch, &opts, |ids: &[u32]| {
        assert_eq!(ids, [1], "only the invalidated element is computed again");
        ids.iter().map(|id| (*id, format!("new {id}"))).collect()
    });
    assert_eq!(again.get(&1).map(String::as_str), Some("new 1"));
    assert_eq!(again.get(&2).map(String::as_str), Some("old 2"));
}

/// An async batch dropped while its loader runs: its locks go back (on a task), and
/// the next batch computes every element.
#[test]
fn a_cancelled_async_batch_releases_its_locks() {
    let backend = memory();
    let opts = locked(&backend);
    let batch = keys("cancel", &[1, 2]);
    let rt = cache_memoize_tests::runtime();
    rt.block_on(async {
        let (started, is_started) = tokio::sync::oneshot::channel::<()>();
        let held = batch.clone();
        let opts2 = opts.clone();
        let task = tokio::spawn(async move {
            memoize_many_async(held, &opts2, |ids: Vec<u32>| async move {
                let _ = started.send(());
                std::future::pending::<()>().await;
                users(&ids)
            })
            .await
        });
        assert!(is_started.await.is_ok());
        for (key, _) in &batch {
            assert!(
                lock_of(&backend, key).is_some(),
                "{key} locked while loading"
            );
        }
        task.abort();
        assert!(task.await.is_err());
    });
    for (key, _) in &batch {
        cache_memoize_tests::wait_until("the lock is released", || {
            lock_of(&backend, key).is_none()
        });
    }
    let got = rt.block_on(memoize_many_async(
        batch,
        &opts,
        |ids: Vec<u32>| async move { users(&ids) },
    ));
    assert_eq!(got, users(&[1, 2]));
}

/// A store whose batch read answers fewer values than keys (a buggy or custom
/// backend): a broken backend never breaks the caller, so the batch reads each
/// element on its own instead of panicking on an index.
#[derive(Default)]
struct ShortReads {
    map: Mutex<HashMap<String, Vec<u8>>>,
    /// Instead of answering short, fail the first batch read (and answer the others).
    fail_first: bool,
    batch_reads: AtomicUsize,
}

impl ShortReads {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for ShortReads {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.map().get(key).cloned())
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let map = self.map();
        let mut len = keys.len();
        if self.fail_first {
            if self.batch_reads.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::backend("get_many", "", "fails once"));
            }
        } else {
            // One value short.
            len = len.saturating_sub(1);
        }
        Ok(keys[..len]
            .iter()
            .map(|key| map.get(*key).cloned())
            .collect())
    }
    fn set(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), Error> {
        self.map().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn add(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<bool, Error> {
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

#[test]
fn a_batch_read_answering_too_few_values_does_not_panic() {
    let opts =
        MemoizeOptions::new().backend(Arc::new(ShortReads::default()) as Arc<dyn CacheBackend>);
    let batch = keys("short", &[1, 2, 3]);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        memoize_many(batch.clone(), &opts, |ids: &[u32]| users(ids))
    }));
    assert_eq!(
        got.ok(),
        Some(users(&[1, 2, 3])),
        "a bad read is a miss, not a panic"
    );
    let rt = cache_memoize_tests::runtime();
    let batch = keys("short-async", &[1, 2, 3]);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(memoize_many_async(
            batch,
            &opts,
            |ids: Vec<u32>| async move { users(&ids) },
        ))
    }));
    assert_eq!(
        got.ok(),
        Some(users(&[1, 2, 3])),
        "async: a miss, not a panic"
    );
}

/// The first read of a batch fails (the backend fails once, then answers): every
/// element fails open at once, as a single call whose read failed does (one loader
/// call, nothing stored: no element sends a read of its own, so a stalled backend
/// costs the batch one timeout); the next batch loads and stores.
#[test]
fn a_failing_batch_read_fails_every_element_open_once() {
    let store = Arc::new(ShortReads {
        fail_first: true,
        ..ShortReads::default()
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&store) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        });
    let batch = keys("firstfail", &[1, 2]);
    let loads = std::sync::atomic::AtomicUsize::new(0);
    let load = |ids: &[u32]| {
        loads.fetch_add(1, Ordering::SeqCst);
        users(ids)
    };
    assert_eq!(memoize_many(batch.clone(), &opts, load), users(&[1, 2]));
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one loader call");
    assert!(store.map().is_empty(), "nothing stored, nothing locked");
    assert_eq!(memoize_many(batch.clone(), &opts, load), users(&[1, 2]));
    let again = memoize_many(batch, &opts, |_: &[u32]| -> HashMap<u32, String> {
        unreachable!("stored")
    });
    assert_eq!(again, users(&[1, 2]));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// Two elements named for one key (a template that does not tell them apart): the key
/// is looked up once, and the map has one entry for it, the first element named for
/// it (as `memoize_many` documents); the loader is given that element only.
#[test]
fn two_elements_of_one_key_have_one_entry_the_first_named() {
    let backend = memory();
    let opts = locked(&backend);
    let key = keys("same", &[0]).remove(0).0;
    let given = Mutex::new(Vec::new());
    let got = memoize_many(
        vec![(key.clone(), 1_u32), (key, 2_u32)],
        &opts,
        |ids: &[u32]| {
            given
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(ids);
            users(ids)
        },
    );
    assert_eq!(got, users(&[1]));
    assert_eq!(*given.lock().unwrap_or_else(PoisonError::into_inner), [1]);
}

/// A single-key call and a batch on one key (`T` against the batch's `Option<T>`):
/// each reads the other's value as a miss and computes; neither serves the other's
/// bytes as its type.
#[test]
fn a_single_key_call_and_a_batch_on_one_key_never_misread() {
    let backend = memory();
    let opts = locked(&backend);
    let batch = keys("mixed", &[7]);
    let key = batch[0].0.clone();
    let single = memoize(&key, &opts, || "single 7".to_owned());
    assert_eq!(single, "single 7");
    let got = memoize_many(batch.clone(), &opts, |ids: &[u32]| users(ids));
    assert_eq!(got.get(&7).map(String::as_str), Some("user 7"));
    let single = memoize(&key, &opts, || "single again".to_owned());
    assert_eq!(single, "single again");
}

/// An empty batch sends nothing and calls no loader.
#[test]
fn empty_batches_do_nothing() {
    let backend = memory();
    let opts = locked(&backend);
    let got: HashMap<u32, String> =
        memoize_many(Vec::<(String, u32)>::new(), &opts, |_: &[u32]| {
            unreachable!("nothing to load")
        });
    assert!(got.is_empty());
    assert!(backend.ops().is_empty(), "no command: {:?}", backend.ops());
}
