//! `#[cache_memoize(batch, ..)]`: a function of a collection returning a map, memoized
//! per element: one body call for the elements this caller computes, none when all are
//! stored, and companions per element. Each test registers a fresh `MemoryBackend`
//! under `registry_guard`, and uses its own function.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Barrier, Mutex, PoisonError};

use cache_memoize::{MemoryBackend, backend, cache_memoize, set_backend};
use cache_memoize_tests::{registry_guard, runtime};
use serde::{Deserialize, Serialize};

/// The elements each body call was given, sorted, call by call.
#[derive(Default)]
struct Calls(Mutex<Vec<Vec<u64>>>);

impl Calls {
    const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn record(&self, ids: impl IntoIterator<Item = u64>) {
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.sort_unstable();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ids);
    }

    fn take(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

fn users_of(ids: &[u64]) -> HashMap<u64, User> {
    ids.iter().map(|id| (*id, user(*id))).collect()
}

/// A fresh in-process backend for one scenario.
fn fresh_backend() -> std::sync::MutexGuard<'static, ()> {
    let guard = registry_guard();
    set_backend(MemoryBackend::new());
    guard
}

static USERS: Calls = Calls::new();

#[cache_memoize(batch, key = "user:{id}", expire = "10m", lock)]
fn users(ids: Vec<u64>) -> HashMap<u64, User> {
    USERS.record(ids.iter().copied());
    // 0 is no user: left out, so stored as an absence.
    ids.into_iter()
        .filter(|id| *id != 0)
        .map(|id| (id, user(id)))
        .collect()
}

#[test]
fn a_cold_batch_calls_the_body_once_with_every_element() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![3, 1, 2]), users_of(&[1, 2, 3]));
    assert_eq!(USERS.take(), [vec![1, 2, 3]]);
}

#[test]
fn a_warm_batch_does_not_call_the_body() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![10, 11]), users_of(&[10, 11]));
    USERS.take();
    assert_eq!(users(vec![11, 10]), users_of(&[10, 11]));
    assert_eq!(users(vec![10]), users_of(&[10]));
    assert!(USERS.take().is_empty());
}

#[test]
fn a_partly_warm_batch_computes_only_the_missing_elements() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![20, 21]), users_of(&[20, 21]));
    USERS.take();
    assert_eq!(users(vec![22, 20, 23, 21]), users_of(&[20, 21, 22, 23]));
    assert_eq!(USERS.take(), [vec![22, 23]]);
}

#[test]
fn an_element_the_body_leaves_out_is_absent_and_stored_as_such() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![0, 30]), users_of(&[30]));
    assert_eq!(users(vec![0, 30]), users_of(&[30]));
    assert_eq!(USERS.take(), [vec![0, 30]]);
    assert!(
        backend()
            .get(users_cache_key(0).as_str())
            .is_ok_and(|stored| stored.is_some())
    );
}

#[test]
fn duplicate_elements_are_computed_once() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![40, 40, 41]), users_of(&[40, 41]));
    assert_eq!(USERS.take(), [vec![40, 41]]);
}

#[test]
fn the_invalidate_companion_removes_each_elements_value() {
    let _backend = fresh_backend();
    assert_eq!(users(vec![50, 51, 52]), users_of(&[50, 51, 52]));
    USERS.take();
    assert!(users_invalidate(vec![50, 52]).is_ok());
    assert!(
        backend()
            .get(users_cache_key(50).as_str())
            .is_ok_and(|stored| stored.is_none())
    );
    assert_eq!(users(vec![50, 51, 52]), users_of(&[50, 51, 52]));
    assert_eq!(USERS.take(), [vec![50, 52]]);
}

#[test]
fn the_cache_key_companion_names_one_elements_key() {
    let _backend = fresh_backend();
    assert_eq!(
        users_cache_key(7).as_str(),
        "{batch_attribute::users|user:7}"
    );
    assert_eq!(users(vec![7]), users_of(&[7]));
    assert!(
        backend()
            .get(users_cache_key(7).as_str())
            .is_ok_and(|stored| stored.is_some())
    );
    USERS.take();
}

static OVERLAP: Calls = Calls::new();

#[cache_memoize(batch, key = "overlap:{id}", lock(retry = "10ms"))]
fn overlapping(ids: Vec<u64>) -> HashMap<u64, User> {
    OVERLAP.record(ids.iter().copied());
    users_of(&ids)
}

#[test]
fn threads_asking_overlapping_batches_compute_each_element_once() {
    let _backend = fresh_backend();
    let start = Arc::new(Barrier::new(8));
    let callers: Vec<_> = (0..8_u64)
        .map(|thread| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let ids: Vec<u64> = (thread..thread + 10).collect();
                start.wait();
                (overlapping(ids.clone()), ids)
            })
        })
        .collect();
    for caller in callers {
        let joined = caller.join();
        assert!(joined.is_ok(), "a caller panicked");
        if let Ok((got, ids)) = joined {
            assert_eq!(got, users_of(&ids));
        }
    }
    let mut computed: Vec<u64> = OVERLAP.take().into_iter().flatten().collect();
    computed.sort_unstable();
    assert_eq!(computed, (0..17).collect::<Vec<u64>>());
}

static SLICES: Calls = Calls::new();

#[cache_memoize(batch, key = "square:{n}")]
fn squares(ns: &[u64]) -> HashMap<u64, u64> {
    SLICES.record(ns.iter().copied());
    ns.iter().map(|n| (*n, n * n)).collect()
}

#[test]
fn a_slice_parameter_is_given_the_missing_elements_as_a_slice() {
    let _backend = fresh_backend();
    assert_eq!(squares(&[2, 3]), HashMap::from([(2, 4), (3, 9)]));
    assert_eq!(
        squares(&[3, 4, 2]),
        HashMap::from([(2, 4), (3, 9), (4, 16)])
    );
    assert_eq!(SLICES.take(), [vec![2, 3], vec![4]]);
    assert!(squares_invalidate(&[3]).is_ok());
    assert_eq!(squares(&[2, 3]), HashMap::from([(2, 4), (3, 9)]));
    assert_eq!(SLICES.take(), [vec![3]]);
}

static SETS: Calls = Calls::new();

#[cache_memoize(batch, key = "set:{id}")]
fn from_set(ids: HashSet<u64>) -> HashMap<u64, User> {
    SETS.record(ids.iter().copied());
    ids.into_iter().map(|id| (id, user(id))).collect()
}

static TREES: Calls = Calls::new();

#[cache_memoize(batch, key = "tree:{id}")]
fn from_tree(ids: BTreeSet<u64>) -> HashMap<u64, User> {
    TREES.record(ids.iter().copied());
    ids.into_iter().map(|id| (id, user(id))).collect()
}

#[test]
fn a_set_parameter_is_given_the_missing_elements_as_a_set() {
    let _backend = fresh_backend();
    assert_eq!(from_set(HashSet::from([1, 2])), users_of(&[1, 2]));
    assert_eq!(from_set(HashSet::from([2, 3])), users_of(&[2, 3]));
    assert_eq!(SETS.take(), [vec![1, 2], vec![3]]);
    assert_eq!(from_tree(BTreeSet::from([5, 6])), users_of(&[5, 6]));
    assert_eq!(from_tree(BTreeSet::from([6, 7])), users_of(&[6, 7]));
    assert_eq!(TREES.take(), [vec![5, 6], vec![7]]);
}

struct Shop {
    id: u64,
    calls: Calls,
}

impl Shop {
    #[cache_memoize(batch, key = "shop:{self.id}:{currency}:price:{sku}")]
    fn prices(&self, currency: &str, skus: Vec<u64>) -> HashMap<u64, String> {
        self.calls.record(skus.iter().copied());
        skus.into_iter()
            .map(|sku| (sku, format!("{} {currency}", self.id * 100 + sku)))
            .collect()
    }
}

#[test]
fn a_method_renders_its_receiver_and_other_parameters_into_each_key() {
    let _backend = fresh_backend();
    let shop = Shop {
        id: 1,
        calls: Calls::new(),
    };
    let expected = HashMap::from([(1, "101 eur".to_owned()), (2, "102 eur".to_owned())]);
    assert_eq!(shop.prices("eur", vec![1, 2]), expected);
    assert_eq!(shop.prices("eur", vec![2, 1]), expected);
    // Another currency is another key for the same element.
    assert_eq!(
        shop.prices("usd", vec![1]),
        HashMap::from([(1, "101 usd".to_owned())])
    );
    assert_eq!(shop.calls.take(), [vec![1, 2], vec![1]]);
    assert!(
        shop.prices_cache_key("eur", 2)
            .as_str()
            .ends_with("::Shop::prices|shop:1:eur:price:2}")
    );
    assert!(shop.prices_invalidate("eur", vec![2]).is_ok());
    assert_eq!(shop.prices("eur", vec![1, 2]), expected);
    assert_eq!(shop.calls.take(), [vec![2]]);
}

static REMOTE: Calls = Calls::new();

#[cache_memoize(batch, key = "remote:{id}", lock(retry = "10ms"))]
async fn remote_users(ids: Vec<u64>) -> HashMap<u64, User> {
    REMOTE.record(ids.iter().copied());
    tokio::task::yield_now().await;
    users_of(&ids)
}

#[test]
fn the_async_form_computes_only_the_missing_elements() {
    let _backend = fresh_backend();
    runtime().block_on(async {
        assert_eq!(remote_users(vec![1, 2]).await, users_of(&[1, 2]));
        assert_eq!(remote_users(vec![2, 1]).await, users_of(&[1, 2]));
        assert_eq!(remote_users(vec![3, 2]).await, users_of(&[2, 3]));
        assert_eq!(REMOTE.take(), [vec![1, 2], vec![3]]);
        assert!(remote_users_invalidate_async(vec![1]).await.is_ok());
        assert_eq!(remote_users(vec![1, 2, 3]).await, users_of(&[1, 2, 3]));
        assert_eq!(REMOTE.take(), [vec![1]]);
    });
}

static REMOTE_SLICE: Calls = Calls::new();

#[cache_memoize(batch, key = "remote_slice:{id}")]
async fn remote_slice(ids: &[u64]) -> HashMap<u64, u64> {
    REMOTE_SLICE.record(ids.iter().copied());
    tokio::task::yield_now().await;
    ids.iter().map(|id| (*id, id + 1)).collect()
}

#[test]
fn the_async_form_takes_a_slice() {
    let _backend = fresh_backend();
    runtime().block_on(async {
        assert_eq!(remote_slice(&[1, 2]).await, HashMap::from([(1, 2), (2, 3)]));
        assert_eq!(remote_slice(&[2, 3]).await, HashMap::from([(2, 3), (3, 4)]));
        assert_eq!(REMOTE_SLICE.take(), [vec![1, 2], vec![3]]);
    });
}

static TAGGED: Calls = Calls::new();

/// Each element tagged with its own user and its tenant (a parameter besides the
/// collection), and with the function's tag.
#[cache_memoize(batch, key = "tagged:{tenant}:{id}", tags = ["user:{id}", "tenant:{tenant}"])]
fn tagged_users(tenant: u32, ids: Vec<u64>) -> HashMap<u64, User> {
    let _ = tenant;
    TAGGED.record(ids.iter().copied());
    users_of(&ids)
}

/// A single-key function tagged with the same user tag.
#[cache_memoize(key = "profile:{id}", tags = ["user:{id}"])]
fn profile(id: u64) -> String {
    TAGGED.record([1000 + id]);
    format!("profile {id}")
}

#[test]
fn a_batchs_tag_templates_are_rendered_per_element() {
    let _backend = fresh_backend();
    assert_eq!(tagged_users(1, vec![1, 2, 3]), users_of(&[1, 2, 3]));
    assert_eq!(profile(2), "profile 2");
    assert_eq!(TAGGED.take(), [vec![1, 2, 3], vec![1002]]);
    // All stored: nothing computed.
    assert_eq!(tagged_users(1, vec![3, 2, 1]), users_of(&[1, 2, 3]));
    assert_eq!(profile(2), "profile 2");
    assert!(TAGGED.take().is_empty());
    // One element's tag: that element (and the single-key value tagged alike) only.
    assert!(cache_memoize::invalidate_tag("user:2").is_ok());
    assert_eq!(tagged_users(1, vec![1, 2, 3]), users_of(&[1, 2, 3]));
    assert_eq!(profile(2), "profile 2");
    assert_eq!(TAGGED.take(), [vec![2], vec![1002]]);
    // A tag rendered from the other parameter: every element of that tenant only.
    assert_eq!(tagged_users(2, vec![1, 2]), users_of(&[1, 2]));
    assert_eq!(TAGGED.take(), [vec![1, 2]]);
    assert!(cache_memoize::invalidate_tag("tenant:1").is_ok());
    assert_eq!(tagged_users(2, vec![1, 2]), users_of(&[1, 2]));
    assert!(TAGGED.take().is_empty());
    assert_eq!(tagged_users(1, vec![1, 3]), users_of(&[1, 3]));
    assert_eq!(TAGGED.take(), [vec![1, 3]]);
}

#[test]
fn a_tagged_batchs_clear_companion_invalidates_every_element() {
    let _backend = fresh_backend();
    assert_eq!(tagged_users(7, vec![1, 2]), users_of(&[1, 2]));
    assert_eq!(tagged_users(8, vec![1]), users_of(&[1]));
    assert_eq!(profile(1), "profile 1");
    TAGGED.take();
    assert!(tagged_users_clear().is_ok());
    // Every value of the batch function, of every tenant; not the other function's.
    assert_eq!(tagged_users(7, vec![1, 2]), users_of(&[1, 2]));
    assert_eq!(tagged_users(8, vec![1]), users_of(&[1]));
    assert_eq!(profile(1), "profile 1");
    assert_eq!(TAGGED.take(), [vec![1, 2], vec![1]]);
}

static TAGGED_ASYNC: Calls = Calls::new();

#[cache_memoize(batch, key = "tagged-async:{id}", tags = ["user:{id}"])]
async fn tagged_remote(ids: Vec<u64>) -> HashMap<u64, User> {
    TAGGED_ASYNC.record(ids.iter().copied());
    users_of(&ids)
}

#[test]
fn the_async_form_renders_tags_per_element() {
    let _backend = fresh_backend();
    runtime().block_on(async {
        assert_eq!(tagged_remote(vec![5, 6]).await, users_of(&[5, 6]));
        assert_eq!(tagged_remote(vec![5, 6]).await, users_of(&[5, 6]));
        assert_eq!(TAGGED_ASYNC.take(), [vec![5, 6]]);
        assert!(cache_memoize::invalidate_tag_async("user:6").await.is_ok());
        assert_eq!(tagged_remote(vec![5, 6]).await, users_of(&[5, 6]));
        assert_eq!(TAGGED_ASYNC.take(), [vec![6]]);
        assert!(tagged_remote_clear_async().await.is_ok());
        assert_eq!(tagged_remote(vec![5, 6]).await, users_of(&[5, 6]));
        assert_eq!(TAGGED_ASYNC.take(), [vec![5, 6]]);
    });
}
