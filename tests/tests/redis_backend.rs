//! What only a real Redis shows: round trips on the wire, scripts flushed, the server
//! restarted or gone, a lock holder killed, wake-ups, and a 16-process stampede.
//! Every server here is private to its test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, CacheLock, Error, LockOptions, MemoizeOptions, RedisBackend, make_cache_key,
    memoize, memoize_async,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::{RedisServer, free_port};
use cache_memoize_tests::{runtime, wait_until};

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

fn locked(backend: &Arc<dyn CacheBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .lock(LockOptions {
            retry: Duration::from_millis(20),
            ..LockOptions::default()
        })
}

fn count(counter: &AtomicUsize) -> usize {
    counter.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn a_hit_is_one_command_and_a_locked_miss_three() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    let opts = locked(&backend);
    // Warm up: scripts loaded, pooled connection open. No wait, so no subscription:
    // the wake-up subscriber connects on a process's first wait only.
    let _: u8 = memoize("warm-up", &opts, || 1);
    proxy.clear();

    let _: String = memoize("measured", &opts, || "v".to_owned());
    assert_eq!(
        proxy.commands(),
        ["GET", "EVALSHA", "EVALSHA"],
        "locked miss"
    );
    proxy.clear();
    let _: String = memoize("measured", &opts, || unreachable!("a hit"));
    assert_eq!(proxy.commands(), ["GET"], "hit");
    proxy.clear();
    let _: String = memoize(
        "unlocked",
        &MemoizeOptions::new().backend(Arc::clone(&backend)),
        || "v".to_owned(),
    );
    // Without a lock option the store is still fenced: made under the lock, taken
    // without waiting.
    assert_eq!(
        proxy.commands(),
        ["GET", "EVALSHA", "EVALSHA"],
        "unlocked miss"
    );
}

#[test]
fn async_hits_and_misses_cost_the_same_commands() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    let opts = locked(&backend);
    runtime().block_on(async {
        let _: u8 = memoize_async("warm-up", &opts, || async { 1 }).await;
        proxy.clear();
        let _: u8 = memoize_async("measured", &opts, || async { 2 }).await;
        assert_eq!(
            proxy.commands(),
            ["GET", "EVALSHA", "EVALSHA"],
            "locked miss"
        );
        proxy.clear();
        let _: u8 = memoize_async("measured", &opts, || async { 3 }).await;
        assert_eq!(proxy.commands(), ["GET"], "hit");
    });
}

#[test]
fn script_flush_mid_run_is_recovered_from() {
    let server = RedisServer::start();
    let backend = connect(&server.url());
    let opts = locked(&backend);
    assert_eq!(memoize("before-flush", &opts, || 1_u32), 1);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.connection())
        .unwrap_or(());
    assert_eq!(memoize("after-flush", &opts, || 2_u32), 2);
    assert_eq!(
        memoize("after-flush", &opts, || 3_u32),
        2,
        "stored through the reloaded script"
    );
    let lock = CacheLock::new("after-flush-lock").backend(Arc::clone(&backend));
    let guard = lock.acquire();
    assert!(
        guard.is_ok_and(|g| g.release().is_ok_and(|ours| ours)),
        "release reloads its script too"
    );
    runtime().block_on(async {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut server.connection())
            .unwrap_or(());
        assert_eq!(
            memoize_async("async-after-flush", &opts, || async { 4_u32 }).await,
            4
        );
        assert_eq!(
            memoize_async("async-after-flush", &opts, || async { 5_u32 }).await,
            4
        );
    });
}

#[test]
fn calls_compute_while_the_server_is_down_and_cache_again_after_restart() {
    let mut server = RedisServer::start();
    let backend = connect(&server.url());
    let opts = locked(&backend);
    let computes = AtomicUsize::new(0);
    assert_eq!(memoize("restart", &opts, || count(&computes)), 1);
    assert_eq!(memoize("restart", &opts, || count(&computes)), 1);

    server.kill();
    assert_eq!(
        memoize("restart", &opts, || count(&computes)),
        2,
        "down: computed"
    );
    assert_eq!(
        memoize("restart", &opts, || count(&computes)),
        3,
        "down: computed again"
    );

    server.restart();
    assert_eq!(
        memoize("restart", &opts, || count(&computes)),
        4,
        "back: a miss, stored"
    );
    assert_eq!(
        memoize("restart", &opts, || count(&computes)),
        4,
        "back: a hit"
    );
}

#[test]
fn async_calls_survive_a_restart_without_a_new_client() {
    let mut server = RedisServer::start();
    let backend = connect(&server.url());
    let opts = locked(&backend);
    let computes = AtomicUsize::new(0);
    runtime().block_on(async {
        assert_eq!(
            memoize_async("restart", &opts, || async { count(&computes) }).await,
            1
        );
        server.kill();
        assert_eq!(
            memoize_async("restart", &opts, || async { count(&computes) }).await,
            2
        );
        server.restart();
        // The connection manager may need a call to notice; caching resumes by itself.
        wait_until_async_caches(&opts).await;
    });
}

async fn wait_until_async_caches(opts: &MemoizeOptions) {
    for attempt in 0..200_u32 {
        let stored: u32 = memoize_async("resumed", opts, || async move { attempt }).await;
        if memoize_async("resumed", opts, || async { u32::MAX }).await == stored {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("caching did not resume after the restart");
}

#[test]
fn a_backend_used_from_a_second_runtime_keeps_caching() {
    let server = RedisServer::start();
    let backend = connect(&server.url());
    let opts = locked(&backend);
    runtime().block_on(async { memoize_async("first-runtime", &opts, || async { 1_u8 }).await });
    // The first runtime, which drove the async connection, is gone now.
    let second = runtime().block_on(async {
        let _ = memoize_async("second-runtime", &opts, || async { 2_u8 }).await;
        memoize_async("second-runtime", &opts, || async { 3_u8 }).await
    });
    assert_eq!(second, 2, "the second runtime reads what it stored");
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let url = format!("redis://:hunter2@127.0.0.1:{}/", free_port());
    match RedisBackend::builder([url.as_str()])
        .connect_timeout(Duration::from_millis(300))
        .connect()
    {
        Err(err @ Error::Connect { .. }) => {
            let message = err.to_string();
            assert!(message.contains("cannot connect"), "{message}");
            assert!(message.contains("127.0.0.1"), "{message}");
            assert!(
                !message.contains("hunter2"),
                "the password is not shown: {message}"
            );
        }
        Err(other) => panic!("expected a connect error, got {other}"),
        Ok(_) => panic!("connected to a port nobody listens on"),
    }
    assert!(matches!(
        RedisBackend::connect("not a url"),
        Err(Error::Connect { .. })
    ));
}

#[test]
fn a_server_gone_for_good_costs_computes_not_errors() {
    let mut server = RedisServer::start();
    let backend = connect(&server.url());
    server.kill();
    let computes = AtomicUsize::new(0);
    for expected in 1..=3 {
        assert_eq!(
            memoize("gone", &locked(&backend), || count(&computes)),
            expected
        );
    }
    let lock = CacheLock::new("gone").backend(Arc::clone(&backend));
    assert!(
        lock.acquire().is_err(),
        "an explicit lock reports the failure"
    );
    runtime().block_on(async {
        assert_eq!(
            memoize_async("gone", &locked(&backend), || async { count(&computes) }).await,
            4
        );
    });
}

#[test]
fn a_killed_holders_lock_is_taken_over_after_expiry_by_exactly_one_waiter() {
    let server = RedisServer::start();
    let key = "killed-holder";
    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold_lock"))
        .args([server.url().as_str(), key, "500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start hold_lock: {err}"));
    let mut said = String::new();
    if let Some(out) = holder.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut said);
    }
    assert_eq!(said.trim(), "locked");
    let _ = holder.kill(); // SIGKILL: no release, the lock stays until it expires
    let _ = holder.wait();

    let backend = connect(&server.url());
    let lock_key = make_cache_key(key).lock_key();
    assert!(
        backend.get(&lock_key).is_ok_and(|v| v.is_some()),
        "the dead holder's lock is still there"
    );
    let computes = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            // Separate backends: as many independent clients as waiters.
            let (opts, computes) = (locked(&connect(&server.url())), Arc::clone(&computes));
            std::thread::spawn(move || {
                memoize(key, &opts, || format!("computed {}", count(&computes)))
            })
        })
        .collect();
    for waiter in waiters {
        assert_eq!(waiter.join().ok().as_deref(), Some("computed 1"));
    }
    assert_eq!(computes.load(Ordering::SeqCst), 1);
    assert!(backend.get(&lock_key).is_ok_and(|v| v.is_none()));
}

#[test]
fn waiters_are_woken_by_the_release_not_by_their_retry() {
    let server = RedisServer::start();
    let holder_backend = connect(&server.url());
    let Ok(holder) = CacheLock::new("wake")
        .backend(Arc::clone(&holder_backend))
        .acquire()
    else {
        panic!("the holder takes the lock")
    };
    // A retry and timeout so long that only a wake-up can end the wait before the
    // timeout; a missed wake-up makes the waiter time out and compute.
    let patient = LockOptions {
        retry: Duration::from_secs(60),
        timeout: Some(Duration::from_secs(60)),
        ..LockOptions::default()
    };
    let computes = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let opts = MemoizeOptions::new()
            .backend(connect(&server.url()))
            .lock(patient);
        let computes = Arc::clone(&computes);
        std::thread::spawn(move || {
            memoize("wake", &opts, || {
                format!("waiter computed {}", count(&computes))
            })
        })
    };
    wait_until("the waiter finds the lock held", || {
        redis::cmd("CLIENT")
            .arg("LIST")
            .query::<String>(&mut server.connection())
            .is_ok_and(|l| l.contains("cmd=evalsha"))
    });
    // The holder stores its value (the encoding made at a scratch key, then copied:
    // what a holder writes under its lock), then releases, which wakes the waiter.
    let scratch_opts = MemoizeOptions::new().backend(Arc::clone(&holder_backend));
    let _: String = memoize("wake-scratch", &scratch_opts, || "holder's".to_owned());
    let bytes = holder_backend
        .get(make_cache_key("wake-scratch").as_str())
        .ok()
        .flatten()
        .unwrap_or_default();
    let stored = holder_backend.set(
        make_cache_key("wake").as_str(),
        &bytes,
        Duration::from_secs(600),
    );
    assert!(stored.is_ok());
    assert!(holder.release().is_ok_and(|ours| ours));
    assert_eq!(waiter.join().ok().as_deref(), Some("holder's"));
    assert_eq!(computes.load(Ordering::SeqCst), 0);
}

#[test]
fn sixteen_processes_of_eight_threads_compute_once() {
    const PROCESSES: usize = 16;
    const THREADS: usize = 8;
    let server = RedisServer::start();
    let (key, counter) = ("stampede", "stampede:computes");
    let mut workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_stampede_worker"))
                .args([server.url().as_str(), key, &THREADS.to_string(), counter])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start stampede_worker: {err}"))
        })
        .collect();
    let mut outputs: Vec<_> = workers
        .iter_mut()
        .filter_map(|w| w.stdout.take().map(BufReader::new))
        .collect();
    for out in &mut outputs {
        let mut ready = String::new();
        let _ = out.read_line(&mut ready);
        assert_eq!(ready.trim(), "ready");
    }
    for worker in &mut workers {
        if let Some(stdin) = worker.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }
    let values: Vec<String> = outputs
        .into_iter()
        .flat_map(|out| out.lines().map_while(Result::ok))
        .collect();
    for mut worker in workers {
        assert!(worker.wait().is_ok_and(|status| status.success()));
    }
    assert_eq!(values.len(), PROCESSES * THREADS);
    assert!(
        values.iter().all(|v| v == "value after 1 compute(s)"),
        "{values:?}"
    );
    let computes: u64 = redis::cmd("GET")
        .arg(counter)
        .query(&mut server.connection())
        .unwrap_or(0);
    assert_eq!(computes, 1);
    let lock_key = make_cache_key(key).lock_key();
    let lock_left: Option<String> = redis::cmd("GET")
        .arg(lock_key)
        .query(&mut server.connection())
        .unwrap_or(None);
    assert_eq!(lock_left, None);
}

#[test]
fn credentials_come_from_the_url_and_wrong_ones_are_a_connect_error() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let port = server.port();
    let good = format!("redis://:s3cret@127.0.0.1:{port}/");
    let backend = connect(&good);
    let opts = locked(&backend);
    assert_eq!(memoize("authed", &opts, || 1_u8), 1);
    assert_eq!(
        memoize("authed", &opts, || 2_u8),
        1,
        "stored with the URL's password"
    );
    for bad in [
        format!("redis://:wrong@127.0.0.1:{port}/"),
        format!("redis://127.0.0.1:{port}/"),
    ] {
        match RedisBackend::connect(&bad) {
            Err(err @ Error::Connect { .. }) => {
                assert!(!err.to_string().contains("wrong"), "{err}");
            }
            Err(other) => panic!("expected a connect error, got {other}"),
            Ok(_) => panic!("connected to {bad}"),
        }
    }
}

/// Issue 22: a service can start before its cache. `connect_lazy` returns at once with
/// the server down; calls compute without the cache meanwhile, skipping the server from
/// the first failed contact (the breaker waits for the first answer; its clock is
/// frozen here, so its own probe would never come); once the
/// server runs, calls are hits within a second (the backend asks every 100 ms and
/// closes the breaker at the first answer), with no restart.
#[test]
fn a_lazily_connected_backend_computes_until_the_server_answers_then_uses_it() {
    let mut server = RedisServer::start();
    server.kill();
    let frozen = std::time::Instant::now();
    let lazy = RedisBackend::builder([server.url()])
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(500))
        .breaker_clock(move || frozen)
        .connect_lazy();
    let redis = match lazy {
        Ok(backend) => backend,
        Err(err) => panic!("connect_lazy fails only for settings that can never work: {err}"),
    };
    wait_until("the first contact failed: calls skip the server", || {
        redis.is_circuit_open()
    });
    let backend: Arc<dyn CacheBackend> = Arc::new(redis.clone());
    let opts = MemoizeOptions::new().backend(Arc::clone(&backend));
    let key = format!("lazy:{}", uuid::Uuid::new_v4().simple());
    let runs = AtomicUsize::new(0);
    let call = || {
        memoize(&key, &opts, || {
            runs.fetch_add(1, Ordering::SeqCst);
            7_u32
        })
    };
    for _ in 0..4 {
        assert_eq!(call(), 7);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "no server: each call computes"
    );
    assert!(redis.is_circuit_open(), "still skipping: no answer yet");

    server.restart();
    let answered = std::time::Instant::now();
    wait_until("calls are hits", || {
        let before = runs.load(Ordering::SeqCst);
        call();
        call();
        runs.load(Ordering::SeqCst) == before
    });
    let took = answered.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "hits within a second of the server answering, not after the breaker's back-off: {took:?}"
    );
    assert!(
        backend
            .get(make_cache_key(&key).as_str())
            .is_ok_and(|found| found.is_some()),
        "the value is in the server"
    );
}

#[test]
fn connect_lazy_still_refuses_settings_that_can_never_work() {
    let refused = RedisBackend::builder(["not a url"]).connect_lazy();
    assert!(refused.is_err(), "a URL that does not parse");
    let refused = RedisBackend::builder(Vec::<String>::new()).connect_lazy();
    assert!(refused.is_err(), "no URL");
}
