//! The blocking-in-runtime warning in each place a blocking call can run (from review 5).
//! It speaks at most once a minute, so each scenario runs in a child process of its own
//! (this binary run again with `BLOCKING_SCENARIO` set).

use std::process::Command;
use std::time::Duration;

use cache_memoize::{BackendCore, Error, ImmediateBackend, MemoryBackend, Op, Reply};
use cache_memoize_tests::captured::Captured;

const SAID: &str = "held a thread inside a Tokio runtime";

/// Slow invalidations of keys naming "slow"; instant failures of every step of keys
/// naming "down".
struct Backend(MemoryBackend);

impl BackendCore for Backend {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        if op.name() == "invalidate" && op.key().contains("slow") {
            std::thread::sleep(Duration::from_millis(150));
        }
        if op.key().contains("down") {
            return Err(Error::backend(op.name(), op.key(), "connection refused"));
        }
        self.0.execute(op)
    }
}

impl ImmediateBackend for Backend {}

#[cache_memoize::cache_memoize(key = "down:{n}")]
fn on_a_failing_backend(n: u32) -> u32 {
    n
}

/// Set when a computation of `slow_to_compute` has begun.
static COMPUTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cache_memoize::cache_memoize(key = "flight:{n}", lock)]
fn slow_to_compute(n: u32) -> u32 {
    COMPUTING.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(400));
    n
}

/// Runs `scenario` in a child process; what it logged at WARN.
fn in_child(scenario: &str) -> String {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => panic!("{err}"),
    };
    let out = Command::new(exe)
        .args(["child", "--exact", "--nocapture", "--include-ignored"])
        .env("BLOCKING_SCENARIO", scenario)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(err) => panic!("{err}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child {scenario} failed: {stdout}");
    stdout
}

/// The child: one scenario, its WARN lines printed between markers.
#[test]
fn child() {
    let Ok(scenario) = std::env::var("BLOCKING_SCENARIO") else {
        return;
    };
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::WARN);
    if let Err(err) = tracing::subscriber::set_global_default(subscriber) {
        panic!("{err}");
    }
    cache_memoize::set_backend(Backend(MemoryBackend::new()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("{err}"),
    };
    match scenario.as_str() {
        "spawn_blocking" => {
            let done = runtime.block_on(async {
                tokio::task::spawn_blocking(|| cache_memoize::invalidate("slow:1")).await
            });
            assert!(matches!(done, Ok(Ok(()))));
        }
        "block_in_place" => {
            let done = runtime.block_on(async {
                tokio::spawn(async {
                    tokio::task::block_in_place(|| cache_memoize::invalidate("slow:4"))
                })
                .await
            });
            assert!(matches!(done, Ok(Ok(()))));
        }
        "entered" => {
            let _entered = runtime.enter();
            assert!(cache_memoize::invalidate("slow:2").is_ok());
        }
        "worker" => {
            let done = runtime.block_on(async {
                tokio::spawn(async { cache_memoize::invalidate("slow:3") }).await
            });
            assert!(matches!(done, Ok(Ok(()))));
        }
        "fast_failure" => {
            let got =
                runtime.block_on(async { tokio::spawn(async { on_a_failing_backend(1) }).await });
            assert!(matches!(got, Ok(1)));
        }
        "flight" => {
            let got = runtime.block_on(async {
                let a = tokio::spawn(async { slow_to_compute(1) });
                // The second call begins once the first computes (it then follows it).
                while !COMPUTING.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
                let b = tokio::spawn(async {
                    let started = std::time::Instant::now();
                    (slow_to_compute(1), started.elapsed())
                });
                (a.await, b.await)
            });
            let (Ok(1), Ok((1, waited))) = got else {
                panic!("{got:?}");
            };
            // The follower held its worker while the leader computed.
            assert!(waited > Duration::from_millis(250), "{waited:?}");
        }
        other => panic!("no scenario {other}"),
    }
    println!("<<<{}>>>", captured.text());
}

fn said(log: &str) -> bool {
    log.contains(SAID)
}

/// Held: a slow blocking invalidation in a task on a worker is said.
#[test]
fn a_slow_invalidation_on_a_worker_is_said() {
    let log = in_child("worker");
    assert!(said(&log), "{log}");
}

/// Inside `spawn_blocking` (the fix the warning recommends) or `block_in_place`, or on
/// a thread that only entered a runtime's context (`Runtime::enter`), a blocking call
/// cannot be told from one on a worker: it is said too, and the line says that there
/// it is harmless (at most once a minute, so a later real case is said again).
#[test]
fn where_a_blocking_call_is_harmless_the_line_says_so() {
    for scenario in ["spawn_blocking", "block_in_place", "entered"] {
        let log = in_child(scenario);
        assert!(
            said(&log) && log.contains("spawn_blocking") && log.contains("harmless"),
            "{scenario}: {log}"
        );
    }
}

/// A backend that fails at once (connection refused) held the worker for no time:
/// not said (a timeout is).
#[test]
fn an_instant_backend_failure_is_not_said() {
    let log = in_child("fast_failure");
    assert!(!said(&log), "false alarm: {log}");
}

/// A sync memoized call that waits ~350 ms on a worker for another caller's
/// in-process computation (the flight) is said, as a wait for the backend's lock is.
#[test]
fn a_long_wait_for_an_in_process_flight_on_a_worker_is_said() {
    let log = in_child("flight");
    assert!(said(&log), "silent: {log}");
}
