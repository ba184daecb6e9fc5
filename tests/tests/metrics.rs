//! With the `metrics` feature, each outcome is a counter labelled by function and
//! outcome, and computations a histogram, through the `metrics` facade.
#![cfg(feature = "metrics")]

use std::sync::Arc;

use cache_memoize::{MemoizeOptions, MemoryBackend, memoize};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn outcomes_are_counted_per_function_through_the_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let opts = MemoizeOptions::new()
        .backend(Arc::new(MemoryBackend::new()))
        .name("metrics::report");
    metrics::with_local_recorder(&recorder, || {
        let _: u8 = memoize("metrics:key", &opts, || 1);
        let _: u8 = memoize("metrics:key", &opts, || 1);
        let _: u8 = memoize("metrics:key", &opts, || 1);
    });
    let mut counters = std::collections::BTreeMap::new();
    let mut computed_samples = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert!(labels.contains(&("function".into(), "metrics::report".into())));
        match (key.key().name(), value) {
            ("cache_memoize_calls_total", DebugValue::Counter(n)) => {
                let outcome = labels
                    .iter()
                    .find(|(k, _)| k == "outcome")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                counters.insert(outcome, n);
            }
            ("cache_memoize_compute_seconds", DebugValue::Histogram(samples)) => {
                computed_samples = samples.len();
            }
            _ => {}
        }
    }
    assert_eq!(counters.get("miss"), Some(&1));
    assert_eq!(counters.get("computed"), Some(&1));
    assert_eq!(counters.get("hit"), Some(&2));
    assert_eq!(computed_samples, 1);
}

#[cache_memoize::cache_memoize(key = "metrics-attribute:{n}")]
fn doubled(n: u32) -> u32 {
    n * 2
}

/// Methods are labelled by their type (issue 22: by module path alone, two types'
/// `price` shared one label); a generic type's instantiations share one.
struct Catalog<T>(T);

impl<T: std::fmt::Display> Catalog<T> {
    #[cache_memoize::cache_memoize(key = "metrics-catalog:{n}", skip(self))]
    fn price(&self, n: u32) -> u32 {
        n + 1
    }
}

#[test]
fn the_attribute_names_its_function_in_the_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        assert_eq!(doubled(21), 42);
        assert_eq!(Catalog(1_u8).price(1), 2);
        assert_eq!(Catalog("x").price(2), 3);
    });
    let functions: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .flat_map(|(key, _, _, _)| {
            key.key()
                .labels()
                .filter(|l| l.key() == "function")
                .map(|l| l.value().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        functions
            .iter()
            .all(|f| f == "metrics::doubled" || f == "metrics::Catalog::price"),
        "{functions:?}"
    );
    assert!(
        functions.iter().any(|f| f == "metrics::doubled"),
        "{functions:?}"
    );
    assert!(
        functions.iter().any(|f| f == "metrics::Catalog::price"),
        "the method's type: {functions:?}"
    );
}

#[test]
fn a_recorder_installed_after_earlier_calls_still_gets_every_count() {
    let opts = MemoizeOptions::new()
        .backend(Arc::new(MemoryBackend::new()))
        .name("metrics::late");
    // Calls before any recorder: the facade's no-op (the keys are made and kept).
    let _: u8 = memoize("metrics:late", &opts, || 1);
    let _: u8 = memoize("metrics:late", &opts, || 1);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let _: u8 = memoize("metrics:late", &opts, || 1);
        let _: u8 = memoize("metrics:late", &opts, || 1);
    });
    let hits: Vec<u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n)
                if key
                    .key()
                    .labels()
                    .any(|l| l.key() == "outcome" && l.value() == "hit") =>
            {
                Some(n)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        hits,
        vec![2],
        "the two hits made under the recorder, no more"
    );
}

#[test]
fn near_cache_hits_are_counted_beside_the_calls() {
    use cache_memoize::{CacheBackend, NearCache, RedisBackend};
    use cache_memoize_tests::server::RedisServer;
    use cache_memoize_tests::wait_until;

    let server = RedisServer::start();
    let backend = match RedisBackend::builder([server.url()])
        .near_cache(NearCache::new())
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    wait_until("tracking is on", || backend.is_near_cache_live());
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .name("metrics::near");
    let _: u8 = memoize("metrics:near", &opts, || 1);
    wait_until("a near hit", || {
        let before = backend.near_cache_hits();
        let _: u8 = memoize("metrics:near", &opts, || 1);
        backend.near_cache_hits() > before
    });
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let before = backend.near_cache_hits();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            let _: u8 = memoize("metrics:near", &opts, || 1);
        }
    });
    let near_hits = backend.near_cache_hits() - before;
    let counted =
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| match (key.key().name(), value) {
                ("cache_memoize_near_hits_total", DebugValue::Counter(n)) => {
                    let function = key
                        .key()
                        .labels()
                        .find(|l| l.key() == "function")
                        .map(|l| l.value().to_owned());
                    Some((n, function))
                }
                _ => None,
            });
    assert_eq!(
        counted,
        Some((near_hits, Some("metrics::near".to_owned()))),
        "near hits, labelled by function (issue 22)"
    );
    assert!(near_hits > 0);
}
