//! How long a caller waits for a computation another caller is running: an in-process
//! follower obeys its own lock options as a caller in another process would
//! (`blocking = false` computes at once, `timeout` bounds the wait), and a waiter riding
//! out backend errors makes no attempt past its timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use cache_memoize::{
    BackendCore, CacheBackend, Error, GetOrLock, ImmediateBackend, LockOptions, MemoizeOptions,
    MemoryBackend, Op, Reply, memoize, memoize_async,
};
use cache_memoize_tests::{Fixture, current_thread_runtime, fast_lock, settle};

/// With `blocking = false`, a caller that finds the value being computed computes it
/// itself at once (Djblets' semantics, and what another process does). In the same
/// process it waits for the leader instead, for as long as the leader computes.
#[test]
fn a_non_blocking_caller_never_waits_for_an_in_process_leader() {
    let f = Fixture::memory();
    let key = f.key("non-blocking-follower");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        blocking: false,
        ..fast_lock()
    });
    let rt = current_thread_runtime();
    rt.block_on(async {
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async move {
                    let _ = finish_rx.await;
                    "leader".to_owned()
                })
                .await
            })
        };
        settle().await; // the leader is computing
        let follower = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async { "follower".to_owned() }).await
            })
        };
        settle().await;
        let finished = follower.is_finished();
        let _ = finish.send(());
        let _ = leader.await;
        let _ = follower.await;
        assert!(
            finished,
            "a blocking = false caller is stuck waiting for the leader's computation"
        );
    });
}

/// The same with a `timeout`: the follower waits past it, for as long as the leader
/// computes (forever, if the leader hangs). Threads, the leader hangs until the end.
#[test]
fn a_follower_waits_no_longer_than_its_lock_timeout() {
    let f = Fixture::memory();
    let key = f.key("timeout-follower");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        timeout: Some(Duration::from_millis(20)),
        ..fast_lock()
    });
    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let leader = {
        let (key, opts) = (key.clone(), opts.clone());
        std::thread::spawn(move || {
            memoize(&key, &opts, move || {
                let _ = started_tx.send(());
                let _ = finish_rx.recv();
                "leader".to_owned()
            })
        })
    };
    let _ = started.recv();
    let (done_tx, done) = mpsc::channel();
    let follower = {
        let (key, opts) = (key.clone(), opts.clone());
        std::thread::spawn(move || {
            let got: String = memoize(&key, &opts, || "follower".to_owned());
            let _ = done_tx.send(got);
        })
    };
    // 500 times the timeout: only a follower that ignores it is still waiting.
    let got = done.recv_timeout(Duration::from_secs(10));
    let _ = finish.send(());
    let _ = leader.join();
    let _ = follower.join();
    assert_eq!(
        got.ok().as_deref(),
        Some("follower"),
        "the follower waited past its 20 ms lock timeout (for the leader's whole computation)"
    );
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

/// A review finding (slow): a waiter riding out backend errors judged its timeout by when its
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
    let value = memoize("lock-waits:rides-out", &opts, || {
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
