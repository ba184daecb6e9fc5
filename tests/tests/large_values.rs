//! Large values (issue 23) under stress the behaviour suite does not stage: a lock
//! that would expire while the chunks are written, a reader whose chunks are
//! rewritten under it, a stale manifest whose chunks are gone, a memory store too
//! small for the value.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, Clock, Error, LockOptions, MemoizeOptions, MemoryBackend, make_cache_key,
    memoize, refresh,
};
use cache_memoize_tests::captured::Captured;
use cache_memoize_tests::freshness_suite::ManualClock;
use cache_memoize_tests::large_suite::payload;
use cache_memoize_tests::probe::Probe;

/// Values over 16 KiB are large.
const THRESHOLD: usize = 16 * 1024;

fn chunk_key(key: &str, slot: u8, index: usize, count: usize) -> String {
    format!(
        "{}:large:{slot}:{index}:{count}",
        make_cache_key(key).as_str()
    )
}

fn probe_over_memory() -> Arc<Probe> {
    Arc::new(Probe::new(Arc::new(MemoryBackend::new())))
}

/// The chunks of a large value take longer to write than the lock's expiry: the lock
/// is kept alive while they are written (as it is while computing), so the value is
/// stored and the next call is a hit. Without that, every call with slow writes
/// recomputes, and two writers write the same slot at once.
#[test]
fn a_lock_outlived_by_slow_chunk_writes_is_kept_alive_and_the_value_stored() {
    let probe = probe_over_memory();
    // 300 ms per `Set` (only the chunks are plain sets): 6 chunks take 1.8 s, past a
    // 900 ms lock (kept alive every 300 ms while computing: a renewal may run up to
    // 600 ms late on a loaded machine and still find the lock).
    probe.after(|op| {
        if op == "set" {
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            expire: Duration::from_millis(900),
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        })
        .large_values(THRESHOLD);
    let key = "large-slow-writes";
    let value = payload(3 * 1024, 1);
    let computed = AtomicUsize::new(0);
    let compute = || {
        computed.fetch_add(1, Ordering::SeqCst);
        value.clone()
    };
    assert_eq!(memoize(key, &opts, compute), value);
    assert_eq!(memoize(key, &opts, compute), value);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "the value stored after slow chunk writes is read back"
    );
}

/// A reader whose manifest's chunks are rewritten under it (two forced writes between
/// its chunk reads, the second in the reader's slot) never returns a mix: it returns
/// the value it read or one it computed.
#[test]
fn a_reader_whose_chunks_are_rewritten_twice_meanwhile_never_returns_a_mix() {
    let probe = probe_over_memory();
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let key = "large-rewritten-under-a-reader";
    let (v1, v2, v3, mine) = (
        payload(1500, 2),
        payload(1500, 3),
        payload(1500, 4),
        payload(1500, 5),
    );
    assert_eq!(memoize(key, &opts, || v1.clone()), v1);
    let (done, rewritten) = mpsc::channel();
    let writer = opts.clone();
    let (w2, w3) = (v2.clone(), v3.clone());
    let once = std::sync::Mutex::new(Some(done));
    probe.after(move |op| {
        if op != "get" {
            return;
        }
        let Some(done) = once.lock().ok().and_then(|mut d| d.take()) else {
            return;
        };
        // After the reader's first get (the manifest), before its chunks: two writes.
        let _ = refresh(|| memoize(key, &writer, || w2.clone()));
        let _ = refresh(|| memoize(key, &writer, || w3.clone()));
        let _ = done.send(());
    });
    let read = memoize(key, &opts, || mine.clone());
    assert!(rewritten.recv_timeout(Duration::from_secs(10)).is_ok());
    // v3 is the value committed when the reader found its chunks rewritten: read
    // whole under the lock, it is an answer as good as its own.
    assert!(
        read == v1 || read == v3 || read == mine,
        "the reader returned a value it did not read whole nor compute ({} bytes, v2: {})",
        read.len(),
        read == v2
    );
    assert!([&v3, &mine].contains(&&memoize(key, &opts, Vec::<u8>::new)));
}

/// A stale large value whose chunks are gone (evicted, expired early) is a miss: the
/// call computes and returns its own value, and stores it.
#[test]
fn a_stale_large_value_whose_chunks_are_gone_is_recomputed() {
    let probe = probe_over_memory();
    let clock = Arc::new(ManualClock::default());
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD)
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let key = "large-stale-chunks-gone";
    let (v1, v2) = (payload(700, 6), payload(700, 7));
    assert_eq!(memoize(key, &opts, || v1.clone()), v1);
    assert!(probe.inner().delete(&chunk_key(key, 0, 1, 2)).is_ok());
    clock.advance(Duration::from_secs(11));
    assert_eq!(memoize(key, &opts, || v2.clone()), v2);
    assert_eq!(memoize(key, &opts, Vec::<u8>::new), v2);
}

/// A large value that cannot fit in a small memory store does not evict the store's
/// other values on each call (before large values it was refused whole, evicting
/// nothing): a value that fits stays a hit.
#[test]
fn a_large_value_too_big_for_the_memory_store_does_not_flush_it() {
    let memory = Arc::new(MemoryBackend::with_capacity(2 * 1024 * 1024));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&memory) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock());
    let small = payload(4, 8);
    assert_eq!(memoize("small-neighbour", &opts, || small.clone()), small);
    let big = payload(4 * 1024, 9);
    for _ in 0..2 {
        assert_eq!(memoize("too-big", &opts, || big.clone()), big);
    }
    let computed = AtomicUsize::new(0);
    let again = memoize("small-neighbour", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        small.clone()
    });
    assert_eq!(again, small);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        0,
        "the neighbour was evicted by chunks of a value that can never be read back"
    );
}

/// A backend that fails the writes of large values' chunks (and nothing else).
struct FailingChunks(MemoryBackend);

impl cache_memoize::BackendCore for FailingChunks {
    fn execute(&self, op: cache_memoize::Op<'_>) -> Result<cache_memoize::Reply, Error> {
        if op.name() == "set" && op.key().contains(":large:") {
            return Err(Error::Skipped {
                address: "test".into(),
                operation: "set",
                key: op.key().to_owned(),
                reason: "chunk writes fail in this test",
            });
        }
        self.0.execute(op)
    }
}

// Answers at once: the async core for free.
impl cache_memoize::ImmediateBackend for FailingChunks {}

/// A chunk write the backend fails is a failed store, said as one (as a small value's
/// failed store is): not a silent success. The caller gets its value; nothing is stored.
#[test]
fn a_failed_chunk_write_is_reported_as_a_failed_store() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    let backend = Arc::new(FailingChunks(MemoryBackend::new()));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let value = payload(100, 10);
    let returned = tracing::subscriber::with_default(subscriber, || {
        memoize("large-failed-chunk", &opts, || value.clone())
    });
    assert_eq!(returned, value);
    let log = captured.text();
    assert!(
        log.contains("chunk writes fail in this test"),
        "the failed chunk write is reported: {log}"
    );
    let computed = AtomicUsize::new(0);
    let again = memoize("large-failed-chunk", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        value.clone()
    });
    assert_eq!((again, computed.load(Ordering::SeqCst)), (value, 1));
}

/// An invalidation that lands while a large value's chunks are written voids the
/// write: the caller gets its value, nothing is stored (the next call computes), and
/// it is no warning (an invalidation is normal operation).
#[test]
fn an_invalidation_during_the_chunk_writes_voids_the_store_quietly() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::WARN);
    let probe = probe_over_memory();
    let key = "large-invalidated-mid-write";
    let cache_key = make_cache_key(key);
    let sets = AtomicUsize::new(0);
    let inner = Arc::clone(probe.inner());
    probe.after(move |op| {
        if op == "set" && sets.fetch_add(1, Ordering::SeqCst) == 1 {
            let _ = inner.invalidate(cache_key.as_str(), &cache_key.lock_key());
        }
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let (v1, v2) = (payload(1500, 11), payload(1500, 12));
    let returned =
        tracing::subscriber::with_default(subscriber, || memoize(key, &opts, || v1.clone()));
    assert_eq!(returned, v1);
    assert_eq!(
        memoize(key, &opts, || v2.clone()),
        v2,
        "the voided write was not stored"
    );
    let log = captured.text();
    assert!(
        !log.contains("WARN"),
        "an invalidation is no warning: {log}"
    );
}

/// A backend whose write of chunk 1 of a large value never answers, once armed.
struct HangingChunk(MemoryBackend, std::sync::atomic::AtomicBool);

impl cache_memoize::BackendCore for HangingChunk {
    fn execute(&self, op: cache_memoize::Op<'_>) -> Result<cache_memoize::Reply, Error> {
        self.0.execute(op)
    }
}

impl cache_memoize::AsyncBackendCore for HangingChunk {
    fn execute_async<'a>(
        &'a self,
        op: cache_memoize::Op<'a>,
    ) -> cache_memoize::BoxFuture<'a, Result<cache_memoize::Reply, Error>> {
        let chunk_one = op.name() == "set" && op.key().contains(":large:1:1:");
        if chunk_one && self.1.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        cache_memoize::AsyncBackendCore::execute_async(&self.0, op)
    }
}

/// An async refresh dropped in the middle of its chunk writes gives the lock back
/// (the next writer does not wait for its expiry) and leaves the committed value
/// whole (its chunks are in the other slot).
#[test]
fn an_async_store_dropped_mid_chunks_releases_the_lock_and_keeps_the_committed_value() {
    let backend = Arc::new(HangingChunk(
        MemoryBackend::new(),
        std::sync::atomic::AtomicBool::new(false),
    ));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let key = "large-dropped-mid-chunks";
    let (v1, v2, v3) = (payload(1500, 13), payload(1500, 14), payload(1500, 15));
    assert_eq!(memoize(key, &opts, || v1.clone()), v1);
    backend.1.store(true, Ordering::SeqCst);
    let rt = cache_memoize_tests::runtime();
    rt.block_on(async {
        let v = v2.clone();
        let refreshing = cache_memoize::refresh_async(cache_memoize::memoize_async(
            key,
            &opts,
            || async move { v },
        ));
        let dropped = tokio::time::timeout(Duration::from_millis(300), refreshing).await;
        assert!(dropped.is_err(), "the refresh hung on its chunk write");
    });
    backend.1.store(false, Ordering::SeqCst);
    assert_eq!(
        memoize(key, &opts, Vec::<u8>::new),
        v1,
        "the committed value"
    );
    let started = std::time::Instant::now();
    assert_eq!(refresh(|| memoize(key, &opts, || v3.clone())), v3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the dropped refresh's lock was released ({:?})",
        started.elapsed()
    );
    assert_eq!(memoize(key, &opts, Vec::<u8>::new), v3);
    drop(rt);
}

/// Records the longest value a `get` answered with.
struct LongestGet(MemoryBackend, AtomicUsize);

impl cache_memoize::BackendCore for LongestGet {
    fn execute(&self, op: cache_memoize::Op<'_>) -> Result<cache_memoize::Reply, Error> {
        let get = op.name() == "get";
        let reply = self.0.execute(op);
        if let (true, Ok(cache_memoize::Reply::Value(Some(bytes)))) = (get, &reply) {
            self.1.fetch_max(bytes.len(), Ordering::SeqCst);
        }
        reply
    }
}

// Answers at once: the async core for free.
impl cache_memoize::ImmediateBackend for LongestGet {}

/// A large value's store moves no more than one chunk per command, even over a value
/// stored whole (by a function sharing the key with a higher threshold, or before the
/// threshold was lowered): the slot is picked without reading that value whole.
#[test]
#[ignore = "a documented bound (README, Large values, Cost): the slot choice reads the \
            committed value, whole (3 MB here) when it was stored whole; a fix needs a \
            head-only read that encryption at rest cannot open"]
fn a_store_over_a_value_stored_whole_moves_no_more_than_a_chunk_per_command() {
    let backend = Arc::new(LongestGet(MemoryBackend::new(), AtomicUsize::new(0)));
    let whole = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(usize::MAX);
    let chunked = whole.clone().large_values(THRESHOLD);
    let key = "large-over-whole";
    let (v1, v2) = (payload(3 * 1024, 16), payload(3 * 1024, 17));
    assert_eq!(memoize(key, &whole, || v1.clone()), v1);
    backend.1.store(0, Ordering::SeqCst);
    assert_eq!(refresh(|| memoize(key, &chunked, || v2.clone())), v2);
    let longest = backend.1.load(Ordering::SeqCst);
    assert!(
        longest <= 600 * 1024,
        "a get moved {longest} bytes while storing a large value"
    );
}

/// Fails every lock renewal and slows each chunk write.
struct NoRenewalSlowChunks(MemoryBackend);

impl cache_memoize::BackendCore for NoRenewalSlowChunks {
    fn execute(&self, op: cache_memoize::Op<'_>) -> Result<cache_memoize::Reply, Error> {
        if op.name() == "compare_and_extend" {
            return Err(Error::Skipped {
                address: "test".into(),
                operation: "compare_and_extend",
                key: op.key().to_owned(),
                reason: "renewals fail in this test",
            });
        }
        if op.name() == "set" && op.key().contains(":large:") {
            std::thread::sleep(Duration::from_millis(60));
        }
        self.0.execute(op)
    }
}

// Answers at once: the async core for free.
impl cache_memoize::ImmediateBackend for NoRenewalSlowChunks {}

/// A renewal that fails while the chunks are written stops the write (the lock may be
/// lost): nothing is stored, and it is said once, as a lock lost while computing.
#[test]
fn a_renewal_failing_during_the_chunk_writes_is_said_as_a_lost_lock() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::WARN);
    let backend = Arc::new(NoRenewalSlowChunks(MemoryBackend::new()));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            expire: Duration::from_millis(600),
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        })
        .large_values(THRESHOLD);
    let key = "large-renewal-fails";
    let value = payload(4 * 1024, 18);
    let returned =
        tracing::subscriber::with_default(subscriber, || memoize(key, &opts, || value.clone()));
    assert_eq!(returned, value);
    let log = captured.text();
    let warnings = log.lines().filter(|line| line.contains("WARN")).count();
    assert_eq!(warnings, 1, "one lost lock, one WARN: {log}");
    assert!(log.contains("not stored"), "{log}");
}

/// A process with a near cache reads a large value while another process rewrites it
/// again and again (both slots, each write another generation): each read is one of
/// the values written (or its own computation), whole, never a mix of near copies and
/// new chunks; once the writes stop it reads the last one.
#[test]
fn a_near_cache_reading_while_another_process_rewrites_never_mixes_writes() {
    use cache_memoize::{NearCache, RedisBackend};
    use cache_memoize_tests::server::RedisServer;

    let server = RedisServer::start();
    let near = RedisBackend::builder([server.url()])
        .response_timeout(Duration::from_secs(10))
        .near_cache(NearCache::new())
        .connect();
    let other = RedisBackend::builder([server.url()])
        .response_timeout(Duration::from_secs(10))
        .connect();
    let (Ok(near), Ok(other)) = (near, other) else {
        panic!("cannot connect to the test server");
    };
    cache_memoize_tests::wait_until("tracking is on", || near.is_near_cache_live());
    let reader = MemoizeOptions::new()
        .backend(Arc::new(near) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let writer = MemoizeOptions::new()
        .backend(Arc::new(other) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let key = "large-near-rewritten";
    let written: Vec<Vec<u8>> = (0..8).map(|i| payload(1200, 100 + i)).collect();
    let mine = payload(1200, 99);
    assert_eq!(memoize(key, &writer, || written[0].clone()), written[0]);
    // Read twice: the second read keeps the manifest and chunks near.
    for _ in 0..2 {
        assert_eq!(memoize(key, &reader, || mine.clone()), written[0]);
    }
    let started = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            started.wait();
            for value in &written[1..] {
                assert_eq!(refresh(|| memoize(key, &writer, || value.clone())), *value);
            }
        });
        started.wait();
        for _ in 0..40 {
            let read = memoize(key, &reader, || mine.clone());
            assert!(
                read == mine || written.contains(&read),
                "a read of {} bytes is none of the values written",
                read.len()
            );
        }
    });
    let last = written.last().cloned().unwrap_or_default();
    cache_memoize_tests::wait_until("the last write is read", || {
        memoize(key, &reader, || mine.clone()) == last
    });
}

/// A function of another type (or version) that shares the key finds the manifest is
/// not its value from the manifest alone (it carries the value's type print and
/// version): it reads none of the chunks before computing its own.
#[test]
fn a_manifest_of_another_type_is_refused_before_its_chunks_are_read() {
    let probe = probe_over_memory();
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&probe) as Arc<dyn CacheBackend>)
        .lock(cache_memoize_tests::fast_lock())
        .large_values(THRESHOLD);
    let key = "large-other-type";
    let bytes = payload(1500, 19);
    assert_eq!(memoize(key, &opts, || bytes.clone()), bytes);
    probe.clear();
    let text = "x".repeat(20 * 1024);
    assert_eq!(memoize(key, &opts, || text.clone()), text);
    let chunk_reads = probe
        .keys_of("get")
        .into_iter()
        .filter(|key| key.contains(":large:"))
        .count();
    assert_eq!(chunk_reads, 0, "chunks read for a value of another type");
    // The same type under another version: refused from the manifest alone too.
    let bytes = payload(1500, 20);
    assert_eq!(memoize(key, &opts, || bytes.clone()), bytes);
    probe.clear();
    let v2 = opts.clone().version(2);
    let other = payload(1500, 21);
    assert_eq!(memoize(key, &v2, || other.clone()), other);
    let chunk_reads = probe
        .keys_of("get")
        .into_iter()
        .filter(|key| key.contains(":large:"))
        .count();
    assert_eq!(chunk_reads, 0, "chunks read for a value of another version");
}
