//! Second review of what landed with the near cache, the failover work and the hit fast
//! path: each test here demonstrates one finding (named in its doc comment) and stays
//! as its regression test. Servers are the tests' own; nothing sleeps to synchronise.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use cache_memoize::{
    AsyncBackend, Backend, BackendCore, CacheBackend, Error, GetOrLock, ImmediateBackend,
    LockOptions, MemoizeOptions, MemoryBackend, NearCache, Op, RedisBackend, Reply, memoize,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::{RedisSentinel, RedisServer};
use cache_memoize_tests::wait_until;

/// Memoizes once when dropped (as a thread-local's destructor, at thread exit) and
/// sends whether that call panicked.
struct MemoizeOnDrop {
    opts: MemoizeOptions,
    key: String,
    report: mpsc::Sender<Result<u32, String>>,
}

impl Drop for MemoizeOnDrop {
    fn drop(&mut self) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            memoize(&self.key, &self.opts, || 7_u32)
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        let _ = self.report.send(result);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<MemoizeOnDrop>> = const { RefCell::new(None) };
}

/// Finding (panic): a memoized call made while a thread's thread-locals are destroyed
/// (a thread-local whose `Drop` flushes through a memoized function) panicked: the
/// per-thread key buffer, the per-thread outcome counters and the metrics key cache
/// were read with `LocalKey::with`, which panics once they are destroyed (they are
/// destroyed before a thread-local set up earlier, last in first out). A panic in a
/// thread-local destructor aborts the process. The call must compute and return.
#[test]
fn a_memoized_call_in_a_thread_local_destructor_does_not_panic() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let opts = MemoizeOptions::new()
        .backend(backend)
        .expire(Duration::from_secs(60));
    let (report, reported) = mpsc::channel();
    let thread_opts = opts.clone();
    let joined = std::thread::spawn(move || {
        // Set up first, so destroyed last: after the crate's own thread-locals.
        ON_EXIT.with(|slot| {
            *slot.borrow_mut() = Some(MemoizeOnDrop {
                opts: thread_opts.clone(),
                key: "review2:tls-destructor:on-exit".to_owned(),
                report,
            });
        });
        // Sets up the crate's thread-locals on this thread.
        assert_eq!(
            memoize("review2:tls-destructor:warm", &thread_opts, || 1_u32),
            1
        );
    })
    .join();
    assert!(joined.is_ok(), "the thread ran");
    let during_destruction = reported.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        during_destruction,
        Ok(Ok(7)),
        "a memoized call during thread-local destruction computes and returns"
    );
}

/// A backend with a near cache told of writes to keys starting with `prefix`.
fn near_with_prefix(url: &str, prefix: &str) -> Arc<RedisBackend> {
    match RedisBackend::builder([url])
        .near_cache(NearCache::new().prefix(prefix))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    }
}

/// Finding (slow, doc): `NearCache::prefix` is documented (README example
/// `.prefix("shop:")`, rustdoc "the key prefix, when one is set") as the key prefix,
/// but a memoized key is stored as `{prefix:key}`: it starts with `{`, so a prefix
/// given as documented covered no key, and nothing was ever kept near (every read went
/// to Redis, silently). A prefix given as the key prefix must cover the keys made
/// under it.
#[test]
fn a_near_cache_prefix_given_as_the_key_prefix_covers_its_keys() {
    let server = RedisServer::start();
    let backend = near_with_prefix(&server.url(), "review2-shop:");
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    wait_until("tracking is on", || backend.is_near_cache_live());
    // `make_cache_key("review2-shop:cart")` is `{review2-shop:cart}`, as a key made
    // under `set_key_prefix("review2-shop")` is `{review2-shop:…}`.
    assert_eq!(memoize("review2-shop:cart", &opts, || 5_u32), 5);
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(memoize("review2-shop:cart", &opts, || 6_u32), 5);
        backend.near_cache_hits() > before
    });
    // And the server tells it of another process's write to such a key.
    let writer: Arc<dyn CacheBackend> = match RedisBackend::connect(&server.url()) {
        Ok(writer) => Arc::new(writer),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let overwrite = opts.clone().backend(writer).force_overwrite(true);
    assert_eq!(memoize("review2-shop:cart", &overwrite, || 8_u32), 8);
    wait_until("the near copy is invalidated", || {
        memoize("review2-shop:cart", &opts, || 9_u32) == 8
    });
}

/// A backend over a [`MemoryBackend`] whose lock is held by someone else on the first
/// attempt, after which every read and lock attempt stalls for [`STALL`] and fails (a
/// server that stopped answering: each request waits out its response timeout).
struct StallsAfterHeld {
    inner: MemoryBackend,
    attempts: AtomicUsize,
    ops: Mutex<Vec<&'static str>>,
}

/// How long a stalled request takes to fail.
const STALL: Duration = Duration::from_millis(300);

impl StallsAfterHeld {
    fn stalled(&self, op: &'static str, key: &str) -> Error {
        self.record(op);
        std::thread::sleep(STALL);
        Error::backend(op, key, "timed out waiting for the reply")
    }

    fn record(&self, op: &'static str) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    fn ops(&self) -> Vec<&'static str> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl BackendCore for StallsAfterHeld {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        match op {
            Op::Get { key } => {
                if self.attempts.load(Ordering::SeqCst) == 0 {
                    self.record("get");
                    return self.inner.execute(op);
                }
                Err(self.stalled("get", key))
            }
            Op::GetOrLock { key, .. } => {
                if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    self.record("get_or_lock");
                    return Ok(Reply::Found(GetOrLock::Held));
                }
                Err(self.stalled("get_or_lock", key))
            }
            Op::WaitForRelease { .. } => Ok(Reply::Done),
            op => self.inner.execute(op),
        }
    }
}

impl ImmediateBackend for StallsAfterHeld {}

/// Finding (slow): a waiter riding out backend errors judged its timeout by when its
/// failing attempt *began*: an attempt that began within the timeout and failed after
/// it (a stalled server: a response timeout later) was followed by a pause and another
/// whole attempt, then the read before computing: with a 50 ms timeout and requests
/// failing after 300 ms, three stalled requests instead of two. The timeout is judged
/// when the attempt failed. (Here the timeout is 200 ms: with 50 ms, a thread paused for
/// 50 ms before its second attempt, as on a loaded machine, would make none.)
#[test]
fn a_waiter_riding_out_errors_makes_no_attempt_past_its_timeout() {
    let backend = Arc::new(StallsAfterHeld {
        inner: MemoryBackend::new(),
        attempts: AtomicUsize::new(0),
        ops: Mutex::default(),
    });
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(60))
        .lock(LockOptions {
            // Well below the stall, so the failing attempt ends past it; well above
            // the 1 ms retry, so a loaded machine still begins that attempt within it.
            timeout: Some(STALL * 2 / 3),
            retry: Duration::from_millis(1),
            ..LockOptions::default()
        });
    let computed = AtomicUsize::new(0);
    let value = memoize("review2:rides-out", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        3_u32
    });
    assert_eq!((value, computed.load(Ordering::SeqCst)), (3, 1));
    assert_eq!(
        backend.ops(),
        ["get", "get_or_lock", "get_or_lock", "get"],
        "the attempt that failed past the timeout is the last; then one read, as after any timeout"
    );
}

/// Finding (slow: an async executor thread blocked): with Sentinel, a blocking caller
/// that resolves the master holds the resolution's mutex for the whole exchange with
/// the Sentinels (up to the connect timeout), and the async path read and wrote the
/// master under the same `std` mutex: an async call made meanwhile blocked its
/// executor thread (every task on it) until the blocking resolution ended. The async
/// path must never wait for a blocking caller's I/O.
#[test]
fn a_blocking_sentinel_resolution_never_blocks_an_async_executor() {
    const SERVICE: &str = "review2-service";
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start(SERVICE, &master, 0);
    let sentinel_port = sentinel
        .url()
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches('/')
        .to_owned();
    let proxy = CountingProxy::start_to(format!("127.0.0.1:{sentinel_port}"));
    let backend = match RedisBackend::builder([proxy.url()])
        .sentinel(SERVICE)
        .connect_timeout(Duration::from_secs(20))
        .response_timeout(Duration::from_secs(20))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect through the Sentinel: {err}"),
    };
    // The pooled connection to the master goes: the next blocking call asks the
    // Sentinel again, and the Sentinel's link is stalled.
    let killed: Result<i64, _> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut master.connection());
    assert!(killed.is_ok(), "{killed:?}");
    proxy.clear();
    proxy.stall();
    let blocking = {
        let backend = Arc::clone(&backend);
        std::thread::spawn(move || {
            // The first call may fail on its killed connection without asking again.
            for _ in 0..2 {
                let _ = backend.get("review2:sentinel");
            }
        })
    };
    wait_until("the blocking caller asks the Sentinel", || {
        proxy.commands().iter().any(|command| command == "SENTINEL")
    });
    let (polled, other_task_ran) = mpsc::channel();
    let executor = {
        let backend = Arc::clone(&backend);
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => panic!("no runtime: {err}"),
            };
            runtime.block_on(async move {
                tokio::spawn(async move {
                    let _ = polled.send(());
                });
                let _ = AsyncBackend::get_async(&*backend, "review2:sentinel").await;
            });
        })
    };
    // Within the blocking caller's 20 s resolution, another task on the executor runs.
    let ran = other_task_ran.recv_timeout(Duration::from_secs(10));
    proxy.resume();
    assert!(blocking.join().is_ok());
    assert!(executor.join().is_ok());
    assert_eq!(
        ran,
        Ok(()),
        "the async call left its executor free while the blocking caller resolved"
    );
}

/// Finding (slow: a committed value destroyed): the pool sends a request once more
/// when its connection was found closed, on the ground that it "never reached a
/// master", but a connection closed after the server ran the request looks the same.
/// A `store_and_release` that ran, whose reply was lost, was sent again, found its lock
/// gone (it had released it) and answered "not stored": a memoized iterator then
/// deleted the chunks of the sequence it had just committed (a value then reports
/// its lock lost). A resent store must recognise its own value.
#[test]
fn a_store_whose_reply_was_lost_is_not_undone_by_its_resend() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend: Arc<dyn CacheBackend> = match RedisBackend::connect(&proxy.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let opts = MemoizeOptions::new()
        .backend(backend)
        .expire(Duration::from_secs(3600))
        .lock(LockOptions::default());
    // Loads the scripts: the cut request below runs (it is not answered `NOSCRIPT`).
    let warm: Vec<u32> = cache_memoize::memoize_iter("review2:warm", &opts, || 0..1_u32).collect();
    assert_eq!(warm, [0]);
    let computed = AtomicUsize::new(0);
    let first: Vec<u32> = cache_memoize::memoize_iter("review2:resent", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        // The commit (the manifest's store, which publishes the release) runs, and
        // its connection is cut before the reply.
        proxy.cut_after(b"cache-memoize:released:");
        0..3_u32
    })
    .collect();
    assert_eq!(first, [0, 1, 2]);
    assert!(
        proxy.commands().iter().filter(|c| *c == "EVALSHA").count() >= 2,
        "the store was sent"
    );
    let again: Vec<u32> = cache_memoize::memoize_iter("review2:resent", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        0..3_u32
    })
    .collect();
    assert_eq!(again, [0, 1, 2]);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "the committed sequence is read back, not computed again"
    );
}

/// Finding (slow): Redis refuses `CLIENT TRACKING … BCAST` with overlapping prefixes
/// ("Prefixes for a single client must not overlap"), so a near cache given, say,
/// `.prefix("shop").prefix("shop:eu")` never went live: every read went to Redis, with
/// one WARN. A prefix inside another adds nothing to track and is not sent.
#[test]
fn overlapping_near_cache_prefixes_still_turn_tracking_on() {
    let server = RedisServer::start();
    let backend = match RedisBackend::builder([server.url()])
        .near_cache(
            NearCache::new()
                .prefix("review2-eu:")
                .prefix("review2")
                .prefix("review2-eu:shop:"),
        )
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    };
    wait_until("tracking is on", || backend.is_near_cache_live());
}

/// Checked, holds (no finding): a `FLUSHALL` from another client (on a server this
/// test started) drops the near copies: the server's invalidation of the whole
/// keyspace reaches the near cache, and the next read computes.
#[test]
fn a_flushall_from_another_client_drops_the_near_copies() {
    let server = RedisServer::start();
    let backend = near_with_prefix(&server.url(), "review2-flush:");
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    wait_until("tracking is on", || backend.is_near_cache_live());
    assert_eq!(memoize("review2-flush:k", &opts, || 1_u32), 1);
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(memoize("review2-flush:k", &opts, || 2_u32), 1);
        backend.near_cache_hits() > before
    });
    let flushed: Result<(), _> = redis::cmd("FLUSHALL").query(&mut server.connection());
    assert!(flushed.is_ok(), "{flushed:?}");
    wait_until("the next read computes", || {
        memoize("review2-flush:k", &opts, || 2_u32) == 2
    });
}
