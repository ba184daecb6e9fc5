//! Tags against the fail-safe throttle and the refresh's recheck, a tagged batch's
//! reads, and an epoch lost or unreadable as a computation reads it.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::MemoizeOptions;
use cache_memoize_tests::Fixture;
use cache_memoize_tests::freshness_suite::{ManualClock, stale_opts};

/// After a refresh of a stale value fails, the fail-safe throttle's mark keeps every
/// caller (the fleet) from computing again for `fail_safe` (1 h here): an untagged
/// function is throttled. A tagged one is not: the refresh's recheck under the lock
/// decodes the value with its epochs still unread (`Epochs::Unread`: `decode` gives
/// `None`), so `marks()` never finds the mark's value, and the failing computation runs
/// again at the next stale hit past the in-process back-off.
fn throttled(opts: &MemoizeOptions, f: &Fixture, name: &str, clock: &Arc<ManualClock>) -> usize {
    let key = f.key(name);
    assert_eq!(cache_memoize::memoize(&key, opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let failed: Result<String, &str> =
        cache_memoize::try_memoize(&key, opts, || Err("the source is down"));
    assert_eq!(failed.as_deref(), Ok("v1"), "the stale value is served");
    // Past the in-process back-off (the lock's retry, 10 ms), well within fail_safe.
    std::thread::sleep(Duration::from_millis(100));
    clock.advance(Duration::from_secs(1));
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let again: Result<String, &str> = cache_memoize::try_memoize(&key, opts, || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err("the source is still down")
    });
    assert_eq!(again.as_deref(), Ok("v1"));
    calls.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn an_untagged_failed_refresh_is_throttled() {
    let f = Fixture::memory();
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(&f, &clock);
    assert_eq!(throttled(&opts, &f, "r7-untagged", &clock), 0);
}

#[test]
fn a_tagged_failed_refresh_is_throttled_too() {
    let f = Fixture::memory();
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(&f, &clock).tags([f.key("r7-tag")]);
    assert_eq!(
        throttled(&opts, &f, "r7-tagged", &clock),
        0,
        "the fail-safe throttle does not hold back a tagged function's failing refresh"
    );
}

/// A tagged batch whose elements are all hits is one read: every value and the
/// batch's tags' epochs in one `get_many`, each element judged by them (not a read per
/// element, nor a read of the values alone that no tagged element could use).
#[test]
fn a_tagged_batch_of_hits_is_one_read() {
    let f = Fixture::memory();
    let opts = f.locked().tags([f.key("r7-batch-tag")]);
    let keys = |ids: &[u32]| -> Vec<(String, u32)> {
        ids.iter()
            .map(|id| (f.key(&format!("r7-batch:{id}")), *id))
            .collect()
    };
    let first = cache_memoize::memoize_many(keys(&[1, 2]), &opts, |ids| {
        ids.iter().map(|id| (*id, id * 10)).collect()
    });
    assert_eq!(first.len(), 2);
    f.probe.clear();
    let again = cache_memoize::memoize_many(keys(&[1, 2]), &opts, |_| {
        std::collections::HashMap::<u32, u32>::new()
    });
    assert_eq!(again.get(&2), Some(&20));
    assert_eq!(
        f.probe.ops(),
        vec!["get_many"],
        "one read of the values and the epochs, nothing else"
    );
    // After an invalidation, the epoch is missing from the batch's read: the elements
    // read their own (the first creates it), then the batch is one read again.
    let tag = f.key("r7-batch-tag");
    assert!(cache_memoize::invalidate_tag_in(&*f.backend(), &tag).is_ok());
    let reloaded = cache_memoize::memoize_many(keys(&[1, 2]), &opts, |ids| {
        ids.iter().map(|id| (*id, id * 100)).collect()
    });
    assert_eq!(
        reloaded.get(&2),
        Some(&200),
        "recomputed under the new epoch"
    );
    f.probe.clear();
    let cached = cache_memoize::memoize_many(keys(&[1, 2]), &opts, |_| {
        std::collections::HashMap::<u32, u32>::new()
    });
    assert_eq!(cached.get(&2), Some(&200));
    assert_eq!(f.probe.ops(), vec!["get_many"]);
}

/// Deletes a tag's epoch right after an `add` created it, once (an `invalidate_tag`
/// racing the read): the call's epochs are then missing on the read again.
struct DeletesTheNewEpoch {
    inner: cache_memoize::MemoryBackend,
    armed: std::sync::atomic::AtomicBool,
}

impl cache_memoize::BackendCore for DeletesTheNewEpoch {
    fn execute(
        &self,
        op: cache_memoize::Op<'_>,
    ) -> Result<cache_memoize::Reply, cache_memoize::Error> {
        let epoch = match &op {
            cache_memoize::Op::Add { key, .. } if key.starts_with("_tag_:") => {
                Some(key.to_string())
            }
            _ => None,
        };
        let reply = self.inner.execute(op);
        let armed = epoch.is_some() && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst);
        if let (Some(key), true) = (epoch, armed) {
            let _ = self.inner.execute(cache_memoize::Op::Delete { key: &key });
        }
        reply
    }
}

impl cache_memoize::ImmediateBackend for DeletesTheNewEpoch {}

/// An epoch deleted between its creation and the read again: the call computes, stores
/// nothing, and gives the lock back (the next call neither waits for it nor finds a
/// value); the next call stores under the new epoch.
#[test]
fn an_epoch_deleted_as_it_is_created_stores_nothing_and_releases_the_lock() {
    let backend = Arc::new(DeletesTheNewEpoch {
        inner: cache_memoize::MemoryBackend::new(),
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn cache_memoize::CacheBackend>)
        .lock(cache_memoize::LockOptions {
            timeout: Some(Duration::from_secs(30)),
            ..cache_memoize_tests::fast_lock()
        })
        .tags(["r7-raced"]);
    let key = "r7-raced-value";
    assert_eq!(cache_memoize::memoize(key, &opts, || 1_u32), 1);
    let started = std::time::Instant::now();
    assert_eq!(
        cache_memoize::memoize(key, &opts, || 2_u32),
        2,
        "nothing was stored"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lock was given back: {:?}",
        started.elapsed()
    );
    assert_eq!(
        cache_memoize::memoize(key, &opts, || 3_u32),
        2,
        "stored under the new epoch"
    );
}

/// Fails every `get_tagged` of epochs alone (the read before a locked computation) while
/// armed.
struct FailsTheEpochsRead {
    inner: cache_memoize::MemoryBackend,
    armed: std::sync::atomic::AtomicBool,
}

impl cache_memoize::BackendCore for FailsTheEpochsRead {
    fn execute(
        &self,
        op: cache_memoize::Op<'_>,
    ) -> Result<cache_memoize::Reply, cache_memoize::Error> {
        if let cache_memoize::Op::GetTagged { keys, with_value } = &op {
            let epochs_only = !with_value && keys.iter().all(|key| key.starts_with("_tag_:"));
            if epochs_only && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(cache_memoize::Error::backend(
                    "get_tagged",
                    keys[0],
                    "injected",
                ));
            }
        }
        self.inner.execute(op)
    }
}

impl cache_memoize::ImmediateBackend for FailsTheEpochsRead {}

/// A forced refresh whose read of the epochs (under the lock) fails computes, stores
/// nothing, and gives the lock back.
#[test]
fn a_forced_refresh_whose_epochs_read_fails_stores_nothing_and_releases_the_lock() {
    let backend = Arc::new(FailsTheEpochsRead {
        inner: cache_memoize::MemoryBackend::new(),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn cache_memoize::CacheBackend>)
        .lock(cache_memoize::LockOptions {
            timeout: Some(Duration::from_secs(30)),
            ..cache_memoize_tests::fast_lock()
        })
        .tags(["r7-failing"]);
    let key = "r7-failing-value";
    assert_eq!(cache_memoize::memoize(key, &opts, || 1_u32), 1);
    backend
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        cache_memoize::refresh(|| cache_memoize::memoize(key, &opts, || 2_u32)),
        2
    );
    backend
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    assert_eq!(
        cache_memoize::refresh(|| cache_memoize::memoize(key, &opts, || 3_u32)),
        3
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lock was given back"
    );
    assert_eq!(
        cache_memoize::memoize(key, &opts, || 4_u32),
        3,
        "stored by the second refresh"
    );
}

/// A backend written before `Op::GetTagged`: it answers it unsupported (and counts so).
struct WithoutGetTagged {
    inner: cache_memoize::MemoryBackend,
    refused: std::sync::atomic::AtomicUsize,
}

impl cache_memoize::BackendCore for WithoutGetTagged {
    fn execute(
        &self,
        op: cache_memoize::Op<'_>,
    ) -> Result<cache_memoize::Reply, cache_memoize::Error> {
        if let cache_memoize::Op::GetTagged { .. } = op {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(op.unsupported());
        }
        self.inner.execute(op)
    }
}

impl cache_memoize::ImmediateBackend for WithoutGetTagged {}

/// A backend that does not know `get_tagged` reads a tagged value and its epochs with
/// `get_many`: tags work on it as on any other.
#[test]
fn a_backend_without_get_tagged_reads_tags_with_get_many() {
    let backend = Arc::new(WithoutGetTagged {
        inner: cache_memoize::MemoryBackend::new(),
        refused: std::sync::atomic::AtomicUsize::new(0),
    });
    let dyn_backend = Arc::clone(&backend) as Arc<dyn cache_memoize::CacheBackend>;
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&dyn_backend))
        .tags(["r8-plain"]);
    assert_eq!(cache_memoize::memoize("r8-plain-value", &opts, || 1_u32), 1);
    assert_eq!(
        cache_memoize::memoize("r8-plain-value", &opts, || 2_u32),
        1,
        "a hit"
    );
    assert!(cache_memoize::invalidate_tag_in(&*dyn_backend, "r8-plain").is_ok());
    assert_eq!(
        cache_memoize::memoize("r8-plain-value", &opts, || 3_u32),
        3,
        "its tag moved: a miss"
    );
    assert!(backend.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
}
