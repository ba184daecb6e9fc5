//! `#[cache_memoize]`: every accepted form runs and caches as promised, on the default
//! (in-process) backend. Each test uses its own function, hence its own keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_memoize::{MemoizeOptions, backend, cache_memoize, make_cache_key, memoize, refresh};
use serde::{Deserialize, Serialize};

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
    assert_eq!(add_cache_key(40, 2).as_str(), "{plain:40:2}");
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
fn without_key_the_module_path_name_and_escaped_arguments_make_the_key() {
    assert_eq!(
        greet_cache_key("a:b c", 2).as_str(),
        "{attribute::greet:a%3Ab%20c:2}"
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
        "{user:ann%3Apage%3Ax:page}"
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
    assert_eq!(a.totals_cache_key(3).as_str(), "{shop:a:totals:3}");
    assert!(
        a.default_keyed_cache_key(1)
            .as_str()
            .ends_with("Shop::default_keyed:a:1}"),
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

#[cache_memoize(key = "forced", force_overwrite)]
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
    #[cache_memoize(key = "same:{x}", version = 3, expire = "1h")]
    fn generated(x: u32) -> Vec<u32> {
        vec![x; 3]
    }
    let hand = MemoizeOptions::new()
        .version(3)
        .expire(Duration::from_secs(3600));
    let key = format!("same:{}", cache_memoize::escape_key_part(&9.to_string()));
    assert_eq!(generated_cache_key(9), make_cache_key(&key));
    assert_eq!(generated(9), vec![9, 9, 9]);
    let generated_bytes = backend().get(make_cache_key(&key).as_str()).ok().flatten();
    assert!(backend().delete(make_cache_key(&key).as_str()).is_ok());
    let by_hand: Vec<u32> = memoize(&key, &hand, || vec![9; 3]);
    assert_eq!(by_hand, vec![9, 9, 9]);
    let hand_bytes = backend().get(make_cache_key(&key).as_str()).ok().flatten();
    assert!(generated_bytes.is_some());
    assert_eq!(generated_bytes, hand_bytes, "same key, same stored bytes");
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
