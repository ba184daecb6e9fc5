//! `#[cache_memoize]`: every accepted form runs and caches as promised, on the default
//! (in-process) backend. Each test uses its own function, hence its own keys.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError, mpsc};
use std::time::{Duration, SystemTime};

use cache_memoize::{
    CacheKey, CacheLock, Clock, MemoizeOptions, backend, cache_memoize, make_cache_key, memoize,
    refresh,
};
use cache_memoize_tests::wait_until;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

static PLAIN: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "plain:{a}:{b}", expire = "10m")]
fn add(a: u32, b: u32) -> u64 {
    PLAIN.fetch_add(1, Ordering::SeqCst);
    u64::from(a) + u64::from(b)
}

#[test]
fn a_plain_function_computes_once_per_arguments() {
    assert_eq!(add(1, 2), 3);
    assert_eq!(add(1, 2), 3);
    assert_eq!(add(2, 1), 3);
    assert_eq!(PLAIN.load(Ordering::SeqCst), 2);
}

#[test]
fn companions_give_the_key_and_invalidate() {
    assert_eq!(add_cache_key(40, 2).as_str(), "{attribute::add|plain:40:2}");
    assert_eq!(add(40, 2), 42);
    assert!(
        backend()
            .get(add_cache_key(40, 2).as_str())
            .is_ok_and(|v| v.is_some())
    );
    assert!(add_invalidate(40, 2).is_ok());
    assert!(
        backend()
            .get(add_cache_key(40, 2).as_str())
            .is_ok_and(|v| v.is_none())
    );
}

static LOCKED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(
    key = "locked:{day}",
    lock(timeout = "5s", expire = "30s", retry = "10ms")
)]
fn report(day: u32) -> String {
    LOCKED.fetch_add(1, Ordering::SeqCst);
    format!("report {day}")
}

#[test]
fn sixteen_threads_on_a_locked_function_compute_once() {
    let start = Arc::new(Barrier::new(16));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                report(7)
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().ok().as_deref(), Some("report 7"));
    }
    assert_eq!(LOCKED.load(Ordering::SeqCst), 1);
    let lock_key = report_cache_key(7).lock_key();
    assert!(backend().get(&lock_key).is_ok_and(|v| v.is_none()));
}

static FALLIBLE: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "fallible:{n}", lock)]
fn parse(n: &str) -> Result<u32, std::num::ParseIntError> {
    FALLIBLE.fetch_add(1, Ordering::SeqCst);
    let value = n.parse::<u32>()?;
    Ok(value)
}

#[test]
fn a_result_stores_only_ok() {
    assert!(parse("x").is_err());
    assert!(parse("x").is_err());
    assert_eq!(FALLIBLE.load(Ordering::SeqCst), 2, "an Err is not stored");
    assert!(
        backend()
            .get(&parse_cache_key("x").lock_key())
            .is_ok_and(|v| v.is_none())
    );
    assert_eq!(parse("12"), Ok(12));
    assert_eq!(parse("12"), Ok(12));
    assert_eq!(FALLIBLE.load(Ordering::SeqCst), 3);
}

static DEFAULT_KEY: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn greet(name: &str, times: u8) -> String {
    DEFAULT_KEY.fetch_add(1, Ordering::SeqCst);
    name.repeat(usize::from(times))
}

#[test]
fn without_key_the_functions_path_and_escaped_arguments_make_the_key() {
    assert_eq!(
        greet_cache_key("a:b c", 2).as_str(),
        "{attribute::greet|a%3Ab%20c:2}"
    );
    assert_eq!(greet("ab", 2), "abab");
    assert_eq!(greet("ab", 2), "abab");
    assert_eq!(greet("a", 4), "aaaa");
    assert_eq!(DEFAULT_KEY.load(Ordering::SeqCst), 2);
}

static ESCAPED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "user:{user}:page")]
fn page(user: &str) -> usize {
    ESCAPED.fetch_add(1, Ordering::SeqCst);
    user.len()
}

#[test]
fn interpolated_values_cannot_forge_another_key() {
    assert_eq!(
        page_cache_key("ann:page:x").as_str(),
        "{attribute::page|user:ann%3Apage%3Ax:page}"
    );
    assert_ne!(page_cache_key("a:page"), page_cache_key("a%3Apage"));
    assert_eq!(page("a:b"), 3);
    assert_eq!(page("a%3Ab"), 5);
    assert_eq!(ESCAPED.load(Ordering::SeqCst), 2);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Totals {
    orders: u32,
    revenue: u64,
}

struct Shop {
    name: &'static str,
    calls: AtomicUsize,
}

impl std::fmt::Display for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Shop {
    /// Methods keep their docs and receiver.
    #[cache_memoize(key = "shop:{self}:totals:{day}", version = 2)]
    fn totals(&self, day: u32) -> Totals {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Totals {
            orders: day,
            revenue: u64::from(day) * 10,
        }
    }

    #[cache_memoize(expire = "1h")]
    fn default_keyed(&self, x: u8) -> u8 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        x
    }
}

#[test]
fn methods_taking_self_are_memoized_per_displayed_receiver() {
    let (a, b) = (
        Shop {
            name: "a",
            calls: AtomicUsize::new(0),
        },
        Shop {
            name: "b",
            calls: AtomicUsize::new(0),
        },
    );
    assert_eq!(
        a.totals(3),
        Totals {
            orders: 3,
            revenue: 30
        }
    );
    assert_eq!(a.totals(3).revenue, 30);
    assert_eq!(b.totals(3).orders, 3);
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(b.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.totals_cache_key(3).as_str(),
        "{attribute::Shop::totals|shop:a:totals:3}"
    );
    assert!(
        a.default_keyed_cache_key(1)
            .as_str()
            .ends_with("Shop::default_keyed|a:1}"),
        "the receiver is part of the default key"
    );
}

static GENERIC: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "generic:{item}")]
fn describe<T>(item: T) -> String
where
    T: std::fmt::Display + Send,
{
    GENERIC.fetch_add(1, Ordering::SeqCst);
    format!("<{item}>")
}

#[test]
fn generic_functions_are_memoized_per_instantiation() {
    assert_eq!(describe(5), "<5>");
    assert_eq!(describe(5), "<5>");
    assert_eq!(describe("5"), "<5>");
    assert_eq!(
        GENERIC.load(Ordering::SeqCst),
        2,
        "one computation per type"
    );
}

static FORCED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "forced", shared_key, force_overwrite)]
fn always() -> usize {
    FORCED.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn force_overwrite_always_computes_and_stores() {
    let first = always();
    let second = always();
    assert_eq!(second, first + 1);
    let stored: usize = memoize("forced", &MemoizeOptions::new(), || 0);
    assert_eq!(stored, second);
}

static REFRESHED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "refreshed:{n}", lock)]
fn counted(n: u32) -> usize {
    REFRESHED.fetch_add(1, Ordering::SeqCst) + n as usize
}

#[test]
fn refresh_recomputes_for_given_arguments() {
    let first = counted(100);
    assert_eq!(counted(100), first);
    let refreshed = refresh(|| counted(100));
    assert_eq!(refreshed, first + 1);
    assert_eq!(counted(100), refreshed);
}

#[test]
fn a_generated_function_and_the_hand_written_call_agree() {
    #[cache_memoize(key = "same:{x}", shared_key, version = 3, expire = "1h")]
    fn generated(x: u32) -> Vec<u32> {
        vec![x; 3]
    }
    let hand = MemoizeOptions::new()
        .version(3)
        .expire(Duration::from_secs(3600));
    let key = format!("same:{}", cache_memoize::escape_key_part(&9.to_string()));
    assert_eq!(generated_cache_key(9), make_cache_key(&key));
    // Each reads what the other stored (the bytes differ: values carry the time they
    // were written).
    assert_eq!(generated(9), vec![9, 9, 9]);
    let by_hand: Vec<u32> = memoize(&key, &hand, || vec![0]);
    assert_eq!(
        by_hand,
        vec![9, 9, 9],
        "the hand-written call read the generated value"
    );
    assert!(backend().delete(make_cache_key(&key).as_str()).is_ok());
    let by_hand: Vec<u32> = memoize(&key, &hand, || vec![1, 2, 3]);
    assert_eq!(by_hand, vec![1, 2, 3]);
    assert_eq!(
        generated(9),
        vec![1, 2, 3],
        "the generated call read the hand-written value"
    );
}

static ASYNC: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "async:{n}", lock(retry = "10ms"))]
async fn slow_square(n: u64) -> u64 {
    ASYNC.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    n * n
}

#[cache_memoize(key = "async-result:{n}")]
async fn async_checked(n: i32) -> Result<i32, String> {
    if n < 0 {
        return Err(format!("{n} is negative"));
    }
    Ok(n * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_functions_compute_once_across_tasks() {
    let tasks: Vec<_> = (0..16).map(|_| tokio::spawn(slow_square(12))).collect();
    for task in tasks {
        assert_eq!(task.await.ok(), Some(144));
    }
    assert_eq!(ASYNC.load(Ordering::SeqCst), 1);
    assert_eq!(async_checked(-1).await, Err("-1 is negative".to_owned()));
    assert!(
        backend()
            .get(async_checked_cache_key(-1).as_str())
            .is_ok_and(|v| v.is_none())
    );
    assert_eq!(async_checked(4).await, Ok(8));
    assert!(
        backend()
            .get(async_checked_cache_key(4).as_str())
            .is_ok_and(|v| v.is_some())
    );
}

static ITERATED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "rows:{n}", lock)]
fn rows(n: u32) -> impl Iterator<Item = String> {
    ITERATED.fetch_add(1, Ordering::SeqCst);
    (0..n).map(|i| format!("row {i}"))
}

#[test]
fn an_iterator_function_streams_once_then_reads_back() {
    let first: Vec<String> = rows(3).collect();
    let second: Vec<String> = rows(3).collect();
    assert_eq!(first, ["row 0", "row 1", "row 2"]);
    assert_eq!(second, first);
    assert_eq!(ITERATED.load(Ordering::SeqCst), 1);
    assert!(
        backend()
            .get(rows_cache_key(3).as_str())
            .is_ok_and(|v| v.is_some())
    );
}

static ASYNC_ITERATED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "async-rows:{n}")]
async fn async_rows(n: u64) -> impl Iterator<Item = u64> {
    ASYNC_ITERATED.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    (0..n).map(|i| i * i)
}

#[tokio::test]
async fn an_async_iterator_function_is_memoized() {
    assert_eq!(async_rows(4).await.collect::<Vec<_>>(), [0, 1, 4, 9]);
    assert_eq!(async_rows(4).await.collect::<Vec<_>>(), [0, 1, 4, 9]);
    assert_eq!(ASYNC_ITERATED.load(Ordering::SeqCst), 1);
}

// Freshness (`stale`, `fail_safe`, `refresh`, `clock`): time is moved by an injected
// clock, never slept; a background refresh is held at a gate the test opens.

/// The system's clock plus a test's own offset, in seconds.
struct Skewed(&'static AtomicU64);

impl Clock for Skewed {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// Holds a computation until the test lets it go: it says when it started, then waits.
struct Gate {
    started: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

/// The test's end of a [`Gate`].
struct GateHandle {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn gate() -> (Gate, GateHandle) {
    let (started, started_rx) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    (
        Gate { started, release },
        GateHandle {
            started: started_rx,
            release: release_tx,
        },
    )
}

/// Passes the gate armed in `slot`, if any (only one computation takes it).
fn pass(slot: &Mutex<Option<Gate>>) {
    let armed = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(gate) = armed {
        let _ = gate.started.send(());
        // Bounded: were the refresh not detached, the test itself would be waiting here.
        let _ = gate.release.recv_timeout(Duration::from_secs(60));
    }
}

/// Waits (with a generous bound, so a bug fails instead of hanging) until the lock of
/// `key` is free, that is until the refresh holding it has stored and released it.
fn until_unlocked(key: &CacheKey) {
    let freed = CacheLock::refreshing(key).acquire_timeout(Duration::from_secs(60));
    assert!(freed.is_ok(), "the refresh never released its lock");
}

static DETACHED_NOW: AtomicU64 = AtomicU64::new(0);
static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);
static DETACHED_GATE: Mutex<Option<Gate>> = Mutex::new(None);

fn detached_clock() -> Arc<dyn Clock> {
    Arc::new(Skewed(&DETACHED_NOW))
}

#[cache_memoize(key = "detached:{id}", expire = "1m", stale = "1h", clock = detached_clock)]
fn detached_price(id: u32) -> usize {
    let run = DETACHED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    pass(&DETACHED_GATE);
    run * 100 + id as usize
}

#[test]
fn owned_arguments_get_the_stale_value_at_once_while_a_background_refresh_runs() {
    assert_eq!(detached_price(1), 101);
    DETACHED_NOW.store(120, Ordering::SeqCst); // past `expire`, within `stale`
    let (armed, gate) = gate();
    *DETACHED_GATE.lock().unwrap_or_else(PoisonError::into_inner) = Some(armed);

    // The caller that finds the value stale returns it at once...
    assert_eq!(detached_price(1), 101);
    // ...while its refresh runs elsewhere, held at the gate.
    assert!(gate.started.recv_timeout(Duration::from_secs(60)).is_ok());
    assert_eq!(DETACHED_RUNS.load(Ordering::SeqCst), 2);

    let _ = gate.release.send(());
    until_unlocked(&detached_price_cache_key(1));
    assert_eq!(detached_price(1), 201, "the refreshed value is served");
    assert_eq!(DETACHED_RUNS.load(Ordering::SeqCst), 2);
}

static BORROWED_NOW: AtomicU64 = AtomicU64::new(0);
static BORROWED_RUNS: AtomicUsize = AtomicUsize::new(0);

fn borrowed_clock() -> Arc<dyn Clock> {
    Arc::new(Skewed(&BORROWED_NOW))
}

#[cache_memoize(key = "borrowed:{name}", expire = "1m", stale = "1h", clock = borrowed_clock)]
fn greeting(name: &str) -> String {
    let run = BORROWED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    format!("hello {name} #{run}")
}

#[test]
fn a_borrowed_argument_is_refreshed_inline_by_the_caller_that_finds_it_stale() {
    assert_eq!(greeting("ann"), "hello ann #1");
    assert_eq!(greeting("ann"), "hello ann #1");
    BORROWED_NOW.store(120, Ordering::SeqCst);
    assert_eq!(greeting("ann"), "hello ann #2", "refreshed in this caller");
    assert_eq!(greeting("ann"), "hello ann #2");
    assert_eq!(BORROWED_RUNS.load(Ordering::SeqCst), 2);
}

static HELD_NOW: AtomicU64 = AtomicU64::new(0);
static HELD_RUNS: AtomicUsize = AtomicUsize::new(0);

fn held_clock() -> Arc<dyn Clock> {
    Arc::new(Skewed(&HELD_NOW))
}

#[cache_memoize(key = "held:{name}", expire = "1m", stale = "1h", clock = held_clock)]
fn label(name: &str) -> String {
    let run = HELD_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{name} #{run}")
}

#[test]
fn a_caller_that_finds_the_refresh_taken_gets_the_stale_value_without_waiting() {
    assert_eq!(label("x"), "x #1");
    HELD_NOW.store(120, Ordering::SeqCst);
    // Another caller, here or elsewhere in the fleet, is refreshing: it holds the lock
    // (which `stale` takes even without `lock`).
    let refreshing = CacheLock::refreshing(&label_cache_key("x")).try_acquire();
    assert!(matches!(refreshing, Ok(Some(_))));
    assert_eq!(label("x"), "x #1", "stale, without waiting for the lock");
    assert_eq!(HELD_RUNS.load(Ordering::SeqCst), 1);
    drop(refreshing);
    // Having found the lock held, this process backs off for the lock's `retry` (the
    // default 250 ms, as no `lock` is set); its stale hits meanwhile start nothing.
    // After it, a caller refreshes.
    wait_until("a caller refreshed after the back-off", || {
        label("x") == "x #2"
    });
    assert_eq!(HELD_RUNS.load(Ordering::SeqCst), 2, "refreshed once");
}

static FAILING_NOW: AtomicU64 = AtomicU64::new(0);
static FAILING_RUNS: AtomicUsize = AtomicUsize::new(0);
static FAILING: AtomicBool = AtomicBool::new(false);

fn failing_clock() -> Arc<dyn Clock> {
    Arc::new(Skewed(&FAILING_NOW))
}

#[cache_memoize(
    key = "failing:{id}",
    expire = "1m",
    stale = "1h",
    fail_safe = "10m",
    refresh = "inline",
    clock = failing_clock
)]
fn quote(id: u32) -> Result<u32, String> {
    let run = FAILING_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if FAILING.load(Ordering::SeqCst) {
        return Err(format!("quote service down (run {run})"));
    }
    Ok(id * 10 + run as u32)
}

#[test]
fn a_failing_refresh_keeps_the_stale_value_and_is_throttled_until_expire_plus_stale() {
    assert_eq!(quote(1), Ok(11));
    FAILING.store(true, Ordering::SeqCst);
    FAILING_NOW.store(120, Ordering::SeqCst);
    assert_eq!(
        quote(1),
        Ok(11),
        "the refresh failed: the stale value is served"
    );
    assert_eq!(FAILING_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(quote(1), Ok(11), "within `fail_safe`: no new attempt");
    assert_eq!(FAILING_RUNS.load(Ordering::SeqCst), 2);

    // Past `expire + stale` nothing stale is served: the error surfaces.
    FAILING_NOW.store(2 * 3600, Ordering::SeqCst);
    assert!(quote(1).is_err());
    assert_eq!(FAILING_RUNS.load(Ordering::SeqCst), 3);
}

static ASYNC_NOW: AtomicU64 = AtomicU64::new(0);
static ASYNC_RUNS: AtomicUsize = AtomicUsize::new(0);
static ASYNC_GATE: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>> = Mutex::new(None);

fn async_clock() -> Arc<dyn Clock> {
    Arc::new(Skewed(&ASYNC_NOW))
}

#[cache_memoize(key = "async-detached:{id}", expire = "1m", stale = "1h", clock = async_clock)]
async fn async_price(id: u32) -> usize {
    let run = ASYNC_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    let armed = ASYNC_GATE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((started, release)) = armed {
        let _ = started.send(());
        let _ = tokio::time::timeout(Duration::from_secs(60), release).await;
    }
    run * 100 + id as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_stale_value_is_served_at_once_while_a_task_refreshes_it() {
    assert_eq!(async_price(1).await, 101);
    ASYNC_NOW.store(120, Ordering::SeqCst);
    let (started_tx, started) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *ASYNC_GATE.lock().unwrap_or_else(PoisonError::into_inner) = Some((started_tx, release_rx));

    assert_eq!(async_price(1).await, 101, "the stale value, at once");
    assert!(started.await.is_ok(), "the refresh task started");
    assert_eq!(ASYNC_RUNS.load(Ordering::SeqCst), 2);

    let _ = release.send(());
    let key = async_price_cache_key(1);
    let freed = tokio::time::timeout(
        Duration::from_secs(60),
        CacheLock::refreshing(&key).acquire_async(),
    )
    .await;
    assert!(
        freed.is_ok_and(|lock| lock.is_ok()),
        "the refresh never released its lock"
    );
    assert_eq!(async_price(1).await, 201);
    assert_eq!(ASYNC_RUNS.load(Ordering::SeqCst), 2);
}

/// The "true" time of the clock-skew test, in milliseconds since the epoch: frozen, so
/// that one second of skew is exactly one second.
static TRUE_MS: AtomicU64 = AtomicU64::new(1_800_000_000_000);

/// [`TRUE_MS`] seen by a host whose clock is off by `skew_ms`.
struct Host {
    skew_ms: i64,
}

impl Clock for Host {
    fn now(&self) -> SystemTime {
        let ms = TRUE_MS
            .load(Ordering::SeqCst)
            .saturating_add_signed(self.skew_ms);
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }
}

fn on_time() -> Arc<dyn Clock> {
    Arc::new(Host { skew_ms: 0 })
}

fn second_ahead() -> Arc<dyn Clock> {
    Arc::new(Host { skew_ms: 1_000 })
}

fn second_behind() -> Arc<dyn Clock> {
    Arc::new(Host { skew_ms: -1_000 })
}

// Three hosts sharing one key: the same function, on clocks that disagree.
static ON_TIME_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "skew:{id}", shared_key, expire = "10s", clock = on_time)]
fn on_time_host(id: u32) -> String {
    ON_TIME_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("computed on time ({id})")
}

#[cache_memoize(key = "skew:{id}", shared_key, expire = "10s", clock = second_ahead)]
fn ahead_host(id: u32) -> String {
    format!("computed ahead ({id})")
}

#[cache_memoize(key = "skew:{id}", shared_key, expire = "10s", clock = second_behind)]
fn behind_host(id: u32) -> String {
    format!("computed behind ({id})")
}

/// Without `stale` or `beta`, freshness is the backend's own TTL (on the server's
/// clock): the readers' clocks do not matter, and all three hosts read the same value.
/// (With `stale`, a reader ahead treats values as stale early: see the behaviour
/// suite's `readers_with_skewed_clocks`.)
#[test]
fn without_stale_the_readers_clocks_do_not_matter() {
    let start = TRUE_MS.load(Ordering::SeqCst);
    assert_eq!(on_time_host(1), "computed on time (1)");
    TRUE_MS.store(start + 9_500, Ordering::SeqCst);
    assert_eq!(behind_host(1), "computed on time (1)");
    assert_eq!(ahead_host(1), "computed on time (1)");
    TRUE_MS.store(start + 10_500, Ordering::SeqCst);
    assert_eq!(behind_host(1), "computed on time (1)");
    assert_eq!(on_time_host(1), "computed on time (1)");
    assert_eq!(ON_TIME_RUNS.load(Ordering::SeqCst), 1);
}
