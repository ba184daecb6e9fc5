//! Batch memoization (issue 25): many keys, one read, one loader call for the keys this
//! caller holds, each key computed once across threads (and processes: the lock).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::Duration;

use cache_memoize::{Backend, Clock, make_cache_key, memoize_many, memoize_many_async, refresh};

use crate::freshness_suite::ManualClock;
use crate::{Fixture, runtime};

/// A batch's (key, element) pairs.
type Batch = Vec<(String, u32)>;

/// The batch's (key, element) pairs for `ids`, under `f`'s keys.
fn keys(f: &Fixture, name: &str, ids: &[u32]) -> Batch {
    ids.iter()
        .map(|id| (f.key(&format!("{name}:{id}")), *id))
        .collect()
}

/// A loader that returns `user <id>` for every id but those in `absent`, and records
/// each call's ids.
#[derive(Default)]
struct Loader {
    calls: Mutex<Vec<Vec<u32>>>,
    absent: Vec<u32>,
}

impl Loader {
    fn load(&self, ids: &[u32]) -> HashMap<u32, String> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ids.to_vec());
        ids.iter()
            .filter(|id| !self.absent.contains(id))
            .map(|id| (*id, format!("user {id}")))
            .collect()
    }

    fn calls(&self) -> Vec<Vec<u32>> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn expected(ids: &[u32]) -> HashMap<u32, String> {
    ids.iter().map(|id| (*id, format!("user {id}"))).collect()
}

/// A cold batch calls the loader once with every element; the same batch again is one
/// read (`get_many`) and no loader call.
pub fn a_cold_batch_loads_once_and_an_all_hit_batch_is_one_read(f: &Fixture) {
    let loader = Loader::default();
    let ids: Vec<u32> = (1..=20).collect();
    let opts = f.locked();
    let got = memoize_many(keys(f, "batch-cold", &ids), &opts, |ids| loader.load(ids));
    assert_eq!(got, expected(&ids));
    assert_eq!(loader.calls().len(), 1);
    let mut given = loader.calls()[0].clone();
    given.sort_unstable();
    assert_eq!(given, ids, "the loader got every element, once");
    f.probe.clear();
    let again = memoize_many(keys(f, "batch-cold", &ids), &opts, |ids| loader.load(ids));
    assert_eq!(again, expected(&ids));
    assert_eq!(loader.calls().len(), 1, "an all-hit batch loads nothing");
    assert_eq!(f.probe.ops(), ["get_many"], "an all-hit batch is one read");
}

/// A partly warm batch passes only the missing elements to the loader.
pub fn a_partly_warm_batch_loads_only_the_missing(f: &Fixture) {
    let loader = Loader::default();
    let opts = f.locked();
    let _ = memoize_many(keys(f, "batch-warm", &[2, 4]), &opts, |ids| {
        loader.load(ids)
    });
    let got = memoize_many(keys(f, "batch-warm", &[1, 2, 3, 4]), &opts, |ids| {
        loader.load(ids)
    });
    assert_eq!(got, expected(&[1, 2, 3, 4]));
    let calls = loader.calls();
    assert_eq!(calls.len(), 2);
    let second: BTreeSet<u32> = calls[1].iter().copied().collect();
    assert_eq!(second, BTreeSet::from([1, 3]));
}

/// An element the loader does not return is left out, and stored as an absence: the
/// next batch does not ask for it again.
pub fn an_element_the_loader_does_not_return_is_a_stored_absence(f: &Fixture) {
    let loader = Loader {
        absent: vec![3],
        ..Loader::default()
    };
    let opts = f.locked();
    let got = memoize_many(keys(f, "batch-absent", &[1, 2, 3]), &opts, |ids| {
        loader.load(ids)
    });
    assert_eq!(got, expected(&[1, 2]));
    let again = memoize_many(keys(f, "batch-absent", &[1, 2, 3]), &opts, |ids| {
        loader.load(ids)
    });
    assert_eq!(again, expected(&[1, 2]));
    assert_eq!(loader.calls().len(), 1);
}

/// Invalidating one element: the next batch loads that one only.
pub fn an_invalidated_element_is_loaded_again_alone(f: &Fixture) {
    let loader = Loader::default();
    let opts = f.locked();
    let batch = keys(f, "batch-invalidated", &[1, 2, 3]);
    let _ = memoize_many(batch.clone(), &opts, |ids| loader.load(ids));
    let key = make_cache_key(&batch[1].0);
    assert!(f.probe.invalidate(key.as_str(), &key.lock_key()).is_ok());
    let got = memoize_many(batch, &opts, |ids| loader.load(ids));
    assert_eq!(got, expected(&[1, 2, 3]));
    assert_eq!(loader.calls().last().cloned(), Some(vec![2]));
}

/// Eight threads asking overlapping batches of a cold key space at once: every key is
/// loaded exactly once, each thread's loader is called at most once, and every thread
/// gets every element it asked for.
pub fn overlapping_batches_in_threads_load_each_key_once(f: &Fixture) {
    let opts = f.locked();
    let loads: Vec<AtomicUsize> = (0..40).map(|_| AtomicUsize::new(0)).collect();
    let start = Barrier::new(8);
    let batches: Vec<(Vec<u32>, Batch)> = (0..8_u32)
        .map(|thread| {
            let ids: Vec<u32> = (0..40).filter(|id| (id + thread) % 3 != 0).collect();
            let batch = keys(f, "batch-overlap", &ids);
            (ids, batch)
        })
        .collect();
    std::thread::scope(|s| {
        for (ids, batch) in batches {
            let (opts, loads, start) = (&opts, &loads, &start);
            s.spawn(move || {
                let calls = AtomicUsize::new(0);
                start.wait();
                let got = memoize_many(batch, opts, |held| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    for id in held {
                        loads[*id as usize].fetch_add(1, Ordering::SeqCst);
                    }
                    expected(held)
                });
                assert_eq!(got, expected(&ids));
                assert!(calls.load(Ordering::SeqCst) <= 1);
            });
        }
    });
    for (id, loads) in loads.iter().enumerate() {
        assert_eq!(loads.load(Ordering::SeqCst), 1, "key {id} was loaded once");
    }
}

/// `refresh(..)` around a batch reloads every element, in one loader call.
pub fn a_forced_batch_reloads_every_element(f: &Fixture) {
    let loader = Loader::default();
    let opts = f.locked();
    let batch = keys(f, "batch-forced", &[1, 2]);
    let _ = memoize_many(batch.clone(), &opts, |ids| loader.load(ids));
    let got = refresh(|| memoize_many(batch.clone(), &opts, |ids| loader.load(ids)));
    assert_eq!(got, expected(&[1, 2]));
    assert_eq!(loader.calls().len(), 2);
    let _ = memoize_many(batch, &opts, |ids| loader.load(ids));
    assert_eq!(loader.calls().len(), 2);
}

/// The async form: one loader call on a miss, none on a hit.
pub fn async_batch_miss_and_hit(f: &Fixture) {
    let opts = f.locked();
    let loads = AtomicUsize::new(0);
    runtime().block_on(async {
        for _ in 0..2 {
            let got = memoize_many_async(keys(f, "batch-async", &[5, 6, 7]), &opts, |ids| {
                loads.fetch_add(1, Ordering::SeqCst);
                async move { expected(&ids) }
            })
            .await;
            assert_eq!(got, expected(&[5, 6, 7]));
        }
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// Large elements (over `large_values`) are stored in chunks and read back whole.
pub fn a_batch_of_large_elements_round_trips(f: &Fixture) {
    let opts = f.locked().large_values(1024);
    let big = |id: u32| vec![u8::try_from(id % 251).unwrap_or(0); 5_000 + id as usize];
    let load = |ids: &[u32]| ids.iter().map(|id| (*id, big(*id))).collect();
    let batch = keys(f, "batch-large", &[1, 2, 3]);
    let first: HashMap<u32, Vec<u8>> = memoize_many(batch.clone(), &opts, load);
    let again: HashMap<u32, Vec<u8>> =
        memoize_many(batch, &opts, |_: &[u32]| unreachable!("stored"));
    assert_eq!(first, again);
    assert_eq!(again.get(&2), Some(&big(2)));
}

/// Under `stale`, elements found stale are refreshed in the batch, as an inline refresh
/// would: they join the missing ones in the one loader call, and the batch returns the
/// new values.
pub fn stale_elements_are_refreshed_in_the_one_loader_call(f: &Fixture) {
    let clock = Arc::new(ManualClock::default());
    let opts = f
        .locked()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let generation = AtomicUsize::new(1);
    let calls = Mutex::new(Vec::<Vec<u32>>::new());
    let load = |ids: &[u32]| -> HashMap<u32, String> {
        calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ids.to_vec());
        let generation = generation.load(Ordering::SeqCst);
        ids.iter()
            .map(|id| (*id, format!("{id} v{generation}")))
            .collect()
    };
    let _ = memoize_many(keys(f, "batch-stale", &[1, 2]), &opts, load);
    clock.advance(Duration::from_secs(11));
    generation.store(2, Ordering::SeqCst);
    let got = memoize_many(keys(f, "batch-stale", &[1, 2, 3]), &opts, load);
    let want: HashMap<u32, String> = [1, 2, 3]
        .iter()
        .map(|id| (*id, format!("{id} v2")))
        .collect();
    assert_eq!(got, want, "the stale elements were refreshed");
    let second: BTreeSet<u32> = calls.lock().unwrap_or_else(PoisonError::into_inner)[1]
        .iter()
        .copied()
        .collect();
    assert_eq!(second, BTreeSet::from([1, 2, 3]), "one loader call");
    let again = memoize_many(keys(f, "batch-stale", &[1, 2, 3]), &opts, |_: &[u32]| {
        unreachable!("fresh again")
    });
    assert_eq!(again, want);
}

/// A batch holds the locks of the elements it computes while it waits for the ones
/// another process computes: they are kept alive from the moment they are taken, so a
/// wait longer than the lock's expiry does not let another caller compute them too.
pub fn locks_held_while_a_batch_waits_are_kept_alive(f: &Fixture) {
    let opts = f.opts().lock(cache_memoize::LockOptions {
        expire: Duration::from_millis(200),
        retry: Duration::from_millis(10),
        ..cache_memoize::LockOptions::default()
    });
    // "Another process": its own client of the store (no shared in-process flight),
    // probed to see its attempts.
    let elsewhere = Arc::new(crate::Probe::new(f.other_client()));
    let other_opts = cache_memoize::MemoizeOptions::new()
        .backend(Arc::clone(&elsewhere) as Arc<dyn cache_memoize::CacheBackend>)
        .lock(cache_memoize::LockOptions {
            expire: Duration::from_millis(200),
            retry: Duration::from_millis(10),
            ..cache_memoize::LockOptions::default()
        });
    let batch = keys(f, "batch-alive", &[1, 2]);
    let (a, b) = (batch[0].0.clone(), batch[1].0.clone());
    let a_key = make_cache_key(&a);
    let attempts_on_a = || {
        elsewhere
            .keys_done_of("get_or_lock")
            .iter()
            .filter(|k| **k == a_key.as_str())
            .count()
    };
    let computed_a = AtomicUsize::new(0);
    let (holding_b, held_b) = std::sync::mpsc::channel();
    let (release_b, b_released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (opts, computed_a, b_opts) = (&opts, &computed_a, &other_opts);
        // Another process computes element 2 until told to stop (a lock the batch's
        // attempt finds held; an in-process flight is waited for before the batch
        // takes any lock).
        s.spawn(move || {
            cache_memoize::memoize(&b, b_opts, || {
                let _ = holding_b.send(());
                let _ = b_released.recv();
                Some("user 2".to_owned())
            })
        });
        assert!(held_b.recv().is_ok());
        let batch_thread = s.spawn(move || {
            memoize_many(batch, opts, |ids| {
                let ones = ids.iter().filter(|id| **id == 1).count();
                computed_a.fetch_add(ones, Ordering::SeqCst);
                expected(ids)
            })
        });
        // The batch holds element 1's lock and waits for element 2's.
        crate::wait_until("the batch holds element 1", || f.lock_token(&a).is_some());
        // Longer than the lock's expiry: unrenewed, element 1's lock would lapse now.
        std::thread::sleep(Duration::from_millis(500));
        let before = attempts_on_a();
        let other_opts = &other_opts;
        let other = s.spawn(move || {
            cache_memoize::memoize(&a, other_opts, || {
                computed_a.fetch_add(1, Ordering::SeqCst);
                Some("user 1 again".to_owned())
            })
        });
        crate::wait_until("the other caller tried element 1's lock", || {
            attempts_on_a() > before
        });
        drop(release_b);
        let got = batch_thread.join().ok();
        assert_eq!(
            got.and_then(|got| got.get(&1).cloned()).as_deref(),
            Some("user 1")
        );
        assert_eq!(
            other.join().ok().flatten().as_deref(),
            Some("user 1"),
            "the other caller read the batch's value"
        );
    });
    assert_eq!(
        computed_a.load(Ordering::SeqCst),
        1,
        "element 1 was computed once"
    );
}
