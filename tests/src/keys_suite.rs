//! Keys that cannot lie (issue 10): each scenario is one case in which the attribute
//! used to return another caller's value, or never cached, and now does neither.
//!
//! The memoized functions use the registered backend: `tests/keys_memory.rs` runs the
//! scenarios on the embedded in-process store, `tests/keys_redis.rs` on a private
//! Redis server. Each scenario has functions (and counters) of its own.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize::{backend, cache_memoize};
use serde::{Deserialize, Serialize};

fn runs(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

fn stored(key: &cache_memoize::CacheKey) -> bool {
    backend().get(key.as_str()).is_ok_and(|v| v.is_some())
}

// 1. The receiver is part of the default key.

/// A tenant's client: its name decides what it reads.
pub struct Tenant {
    name: &'static str,
    calls: AtomicUsize,
}

impl Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Tenant {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            calls: AtomicUsize::new(0),
        }
    }

    #[cache_memoize]
    fn user(&self, id: u32) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.name)
    }
}

/// `acme.user(1)` then `globex.user(1)`: each tenant reads its own value.
pub fn a_receiver_is_part_of_the_default_key() {
    let (acme, globex) = (Tenant::new("acme"), Tenant::new("globex"));
    assert_eq!(acme.user(1), "acme:1");
    assert_eq!(globex.user(1), "globex:1");
    assert_eq!(acme.user(1), "acme:1");
    assert_eq!(globex.user(1), "globex:1");
    assert_eq!(runs(&acme.calls), 1);
    assert_eq!(runs(&globex.calls), 1);
    assert_ne!(acme.user_cache_key(1), globex.user_cache_key(1));
}

// 2. A template names every parameter, or skips it.

static SEARCHED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "search:{q}:{limit}")]
fn search(q: &str, limit: Option<u32>) -> Vec<String> {
    SEARCHED.fetch_add(1, Ordering::SeqCst);
    vec![q.to_owned(); limit.unwrap_or(3) as usize]
}

/// `search("rust", Some(10))` no longer returns the 3 items cached for `None`.
pub fn every_parameter_of_a_template_is_in_the_key() {
    assert_eq!(search("rust", None).len(), 3);
    assert_eq!(search("rust", Some(10)).len(), 10);
    assert_eq!(search("rust", None).len(), 3);
    assert_eq!(runs(&SEARCHED), 2);
    assert_eq!(
        search_cache_key("rust", None).as_str(),
        "{cache_memoize_tests::keys_suite::search|search:rust:None}"
    );
    assert_eq!(
        search_cache_key("rust", Some(10)).as_str(),
        "{cache_memoize_tests::keys_suite::search|search:rust:Some(10)}"
    );
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// A connection that does not change what is read.
pub struct Pool(pub u8);

#[cache_memoize(key = "price:{id}", skip(_pool))]
fn price(_pool: &Pool, id: u32) -> u64 {
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    u64::from(id) * 100
}

/// A skipped parameter is left out of the key, and kept by the companions.
pub fn a_skipped_parameter_is_left_out() {
    assert_eq!(price(&Pool(1), 7), 700);
    assert_eq!(price(&Pool(2), 7), 700);
    assert_eq!(runs(&SKIPPED), 1);
    assert_eq!(
        price_cache_key(&Pool(3), 7).as_str(),
        "{cache_memoize_tests::keys_suite::price|price:7}"
    );
    assert!(price_invalidate(&Pool(4), 7).is_ok());
    assert!(!stored(&price_cache_key(&Pool(1), 7)));
}

// 3. `Err` is never stored, however the `Result` is spelled.

/// An error that could be serialized (and so used to be stored).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct AppError(String);

type AppResult<T> = Result<T, AppError>;

static ALIASED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn checked(n: i32) -> AppResult<i32> {
    ALIASED.fetch_add(1, Ordering::SeqCst);
    if n < 0 {
        return Err(AppError(format!("{n} < 0")));
    }
    Ok(n * 2)
}

static ASYNC_ALIASED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
async fn checked_async(n: i32) -> AppResult<i32> {
    ASYNC_ALIASED.fetch_add(1, Ordering::SeqCst);
    if n < 0 {
        return Err(AppError(format!("{n} < 0")));
    }
    Ok(n * 2)
}

/// `type AppResult<T> = Result<T, AppError>`: an `Err` is returned, not stored.
pub fn err_of_an_aliased_result_is_not_stored() {
    assert_eq!(checked(-1), Err(AppError("-1 < 0".into())));
    assert_eq!(checked(-1), Err(AppError("-1 < 0".into())));
    assert_eq!(runs(&ALIASED), 2);
    assert!(!stored(&checked_cache_key(-1)));
    assert_eq!(checked(4), Ok(8));
    assert_eq!(checked(4), Ok(8));
    assert_eq!(runs(&ALIASED), 3);
    assert!(stored(&checked_cache_key(4)));
    let runtime = crate::runtime();
    runtime.block_on(async {
        assert!(checked_async(-1).await.is_err());
        assert!(checked_async(-1).await.is_err());
        assert_eq!(checked_async(2).await, Ok(4));
        assert_eq!(checked_async(2).await, Ok(4));
    });
    assert_eq!(runs(&ASYNC_ALIASED), 3);
}

static NONE_SKIPPED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(cache_none = false)]
fn lookup(n: u32) -> Option<u32> {
    NONE_SKIPPED.fetch_add(1, Ordering::SeqCst);
    (n > 0).then_some(n)
}

static ASYNC_NONE_SKIPPED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(cache_none = false, lock)]
async fn lookup_async(n: u32) -> Option<u32> {
    ASYNC_NONE_SKIPPED.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    (n > 0).then_some(n)
}

/// `cache_none = false`: a `None` is returned, not stored; a `Some` is.
pub fn cache_none_false_does_not_store_none() {
    assert_eq!(lookup(0), None);
    assert_eq!(lookup(0), None);
    assert!(!stored(&lookup_cache_key(0)));
    assert_eq!(lookup(5), Some(5));
    assert_eq!(lookup(5), Some(5));
    assert_eq!(runs(&NONE_SKIPPED), 3);
    crate::runtime().block_on(async {
        assert_eq!(lookup_async(0).await, None);
        assert_eq!(lookup_async(0).await, None);
        assert_eq!(lookup_async(5).await, Some(5));
        assert_eq!(lookup_async(5).await, Some(5));
    });
    assert_eq!(runs(&ASYNC_NONE_SKIPPED), 3);
    assert!(!stored(&lookup_async_cache_key(0)));
}

// 4. Values bincode cannot read back: a self-describing codec.

/// A JSON document, a sparse struct and an internally tagged enum: none reads back
/// through bincode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    body: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    event: Event,
}

/// An internally tagged enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Event {
    /// Created.
    Created {
        /// By whom.
        by: String,
    },
}

static DOCUMENTS: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(codec = "msgpack")]
fn document(id: u32) -> Document {
    DOCUMENTS.fetch_add(1, Ordering::SeqCst);
    Document {
        body: serde_json::json!({ "id": id, "tags": ["a", "b"] }),
        note: None,
        event: Event::Created { by: "ann".into() },
    }
}

/// With `codec = "msgpack"`, such values are computed once, then read back.
pub fn a_self_describing_codec_reads_back_what_bincode_cannot() {
    let first = document(1);
    assert_eq!(document(1), first);
    assert_eq!(document(1).body["tags"][1], "b");
    assert_eq!(runs(&DOCUMENTS), 1);
}

// 5 and 7. Generic functions key by their instantiation.

static PARSED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn parse_as<T>(s: &str) -> T
where
    T: std::str::FromStr + Default + Serialize + for<'de> Deserialize<'de>,
{
    PARSED.fetch_add(1, Ordering::SeqCst);
    s.parse().unwrap_or_default()
}

/// `parse_as::<u32>` and `parse_as::<String>` each compute once, then hit.
pub fn a_generic_function_keys_by_its_type_parameters() {
    for _ in 0..3 {
        assert_eq!(parse_as::<u32>("7"), 7);
        assert_eq!(parse_as::<String>("7"), "7");
    }
    assert_eq!(runs(&PARSED), 2);
    assert_ne!(
        parse_as_cache_key::<u32>("7"),
        parse_as_cache_key::<String>("7")
    );
    assert_eq!(
        parse_as_cache_key::<u32>("7").as_str(),
        "{cache_memoize_tests::keys_suite::parse_as<u32>|7}",
        "the identity names the instantiation"
    );
    assert!(stored(&parse_as_cache_key::<String>("7")));
}

static DESCRIBED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn describe<T: Display>(x: T) -> String {
    DESCRIBED.fetch_add(1, Ordering::SeqCst);
    format!("{x}: {}", std::any::type_name::<T>())
}

static SHOWN: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn shown(x: impl Display) -> String {
    SHOWN.fetch_add(1, Ordering::SeqCst);
    format!("<{x}>")
}

/// `describe(1_u32)`, `describe("1")`, `describe(1.0)`: three values, three keys.
pub fn arguments_that_display_alike_but_differ_in_type_do_not_share() {
    assert_eq!(describe(1_u32), "1: u32");
    assert_eq!(describe("1"), "1: &str");
    assert_eq!(describe(1.0), "1: f64");
    assert_eq!(describe(1_u32), "1: u32");
    assert_eq!(runs(&DESCRIBED), 3);
    assert_eq!(shown(1_u8), "<1>");
    assert_eq!(shown("1"), "<1>");
    assert_eq!(shown(1_u8), "<1>");
    assert_eq!(
        runs(&SHOWN),
        2,
        "impl Trait arguments key by their type too"
    );
}

// 6. Any sensible argument type is a key part.

/// A query known only by its `Debug` output.
#[derive(Debug)]
pub struct Query {
    text: String,
    page: u8,
}

/// A filter known only by `Serialize`.
#[derive(Serialize)]
pub struct Filter {
    tags: Vec<String>,
    min: Option<u32>,
}

static KINDS: AtomicUsize = AtomicUsize::new(0);

#[allow(clippy::needless_pass_by_value)] // by value is what is being tested
#[cache_memoize]
fn containers(
    limit: Option<u32>,
    tags: Vec<String>,
    pair: (u8, u8),
    bytes: &[u8],
    map: HashMap<String, u32>,
) -> String {
    KINDS.fetch_add(1, Ordering::SeqCst);
    format!("{limit:?} {tags:?} {pair:?} {bytes:?} {}", map.len())
}

static DEBUGGED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "query:{query:?}:{filter}")]
fn query(query: &Query, filter: &Filter) -> String {
    DEBUGGED.fetch_add(1, Ordering::SeqCst);
    format!(
        "{} {} {:?} {:?}",
        query.text, query.page, filter.tags, filter.min
    )
}

static NESTED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn nested(words: Vec<&str>, pairs: (&str, &str), maybe: Option<&str>) -> String {
    NESTED.fetch_add(1, Ordering::SeqCst);
    format!("{words:?}{pairs:?}{maybe:?}")
}

/// `Option`, `Vec`, tuples, byte slices, maps, `Debug` and `Serialize` types: each is a
/// key part, computed once per distinct value.
pub fn any_sensible_argument_type_is_a_key_part() {
    let map: HashMap<String, u32> = (0..20).map(|i| (i.to_string(), i)).collect();
    let call = || containers(Some(1), vec!["a".into()], (1, 2), b"xy", map.clone());
    let first = call();
    assert_eq!(call(), first);
    assert_eq!(runs(&KINDS), 1);
    let _ = containers(None, vec!["a".into()], (1, 2), b"xy", map.clone());
    let _ = containers(Some(1), vec![], (1, 2), b"xy", map.clone());
    let _ = containers(Some(1), vec!["a".into()], (2, 1), b"xy", map.clone());
    let _ = containers(Some(1), vec!["a".into()], (1, 2), b"yx", map.clone());
    let _ = containers(Some(1), vec!["a".into()], (1, 2), b"xy", HashMap::new());
    assert_eq!(runs(&KINDS), 6);
    let rebuilt: HashMap<String, u32> = (0..20).rev().map(|i| (i.to_string(), i)).collect();
    let _ = containers(Some(1), vec!["a".into()], (1, 2), b"xy", rebuilt);
    assert_eq!(runs(&KINDS), 6, "a map's key does not depend on its order");

    let q = |page| Query {
        text: "rust".into(),
        page,
    };
    let f = |min| Filter {
        tags: vec!["x".into()],
        min,
    };
    assert_eq!(query(&q(1), &f(None)), query(&q(1), &f(None)));
    let _ = query(&q(2), &f(None));
    let _ = query(&q(1), &f(Some(0)));
    assert_eq!(runs(&DEBUGGED), 3);
}

/// `Some("")` vs `None`, `[]` vs `[""]`, `("a:b","c")` vs `("a","b:c")`: distinct keys.
pub fn distinct_argument_tuples_never_share_a_key() {
    let pairs = [
        (
            nested_cache_key(vec![], ("a:b", "c"), Some("")),
            nested_cache_key(vec![], ("a:b", "c"), None),
        ),
        (
            nested_cache_key(vec![], ("a", "b"), None),
            nested_cache_key(vec![""], ("a", "b"), None),
        ),
        (
            nested_cache_key(vec![], ("a:b", "c"), None),
            nested_cache_key(vec![], ("a", "b:c"), None),
        ),
        (
            nested_cache_key(vec!["a,b"], ("", ""), None),
            nested_cache_key(vec!["a", "b"], ("", ""), None),
        ),
    ];
    for (a, b) in &pairs {
        assert_ne!(a, b);
    }
    assert_ne!(
        nested(vec![], ("a", "b"), Some("")),
        nested(vec![], ("a", "b"), None)
    );
    assert_eq!(runs(&NESTED), 2);
}

// 8. Adjacent placeholders.

static ADJACENT: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "adj:{a}{b}")]
fn adjacent(a: &str, b: &str) -> String {
    ADJACENT.fetch_add(1, Ordering::SeqCst);
    format!("{a}|{b}")
}

/// `"adj:{a}{b}"` with `("ab", "")` and `("a", "b")`: two keys, two values.
pub fn adjacent_placeholders_do_not_run_together() {
    assert_eq!(adjacent("ab", ""), "ab|");
    assert_eq!(adjacent("a", "b"), "a|b");
    assert_eq!(adjacent("ab", ""), "ab|");
    assert_eq!(runs(&ADJACENT), 2);
    assert_eq!(
        adjacent_cache_key("a", "b").as_str(),
        "{cache_memoize_tests::keys_suite::adjacent|adj:a:b}"
    );
}

/// Keys of all-`Display` named parameters keep the form they had, after the
/// function's identity (issue 19).
pub fn display_keys_keep_their_form() {
    assert_eq!(
        search_cache_key("a b", Some(1)).as_str(),
        "{cache_memoize_tests::keys_suite::search|search:a%20b:Some(1)}"
    );
    assert_eq!(
        price_cache_key(&Pool(0), 9).as_str(),
        "{cache_memoize_tests::keys_suite::price|price:9}"
    );
}

/// Calls `$callback!` with every scenario's name.
#[macro_export]
macro_rules! key_scenarios {
    ($callback:ident) => {
        $callback!(
            a_receiver_is_part_of_the_default_key,
            every_parameter_of_a_template_is_in_the_key,
            a_skipped_parameter_is_left_out,
            err_of_an_aliased_result_is_not_stored,
            cache_none_false_does_not_store_none,
            a_self_describing_codec_reads_back_what_bincode_cannot,
            a_generic_function_keys_by_its_type_parameters,
            arguments_that_display_alike_but_differ_in_type_do_not_share,
            any_sensible_argument_type_is_a_key_part,
            distinct_argument_tuples_never_share_a_key,
            adjacent_placeholders_do_not_run_together,
            display_keys_keep_their_form
        );
    };
}
