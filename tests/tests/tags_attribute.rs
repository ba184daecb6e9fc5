//! `#[cache_memoize(tags = [..])]`: each tag template is rendered from the call's
//! arguments, and `invalidate_tag` of any of them makes the values stored with it
//! misses (sync and async), while values without it stay hits; `<name>_clear()` drops
//! every value of one function.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_memoize::{
    MemoryBackend, cache_memoize, invalidate_tag, invalidate_tag_async, set_backend,
};
use cache_memoize_tests::{registry_guard, runtime};

static COMPUTED: AtomicU32 = AtomicU32::new(0);

#[cache_memoize(key = "profile:{tenant}:{id}", tags = ["user:{id}", "tenant:{tenant}"])]
fn profile(id: u32, tenant: &str) -> String {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    format!("{tenant}/{id}")
}

#[cache_memoize(tags = ["user:{id}"])]
async fn avatar(id: u32) -> u32 {
    COMPUTED.fetch_add(1, Ordering::SeqCst) + id * 1000
}

fn computed() -> u32 {
    COMPUTED.load(Ordering::SeqCst)
}

#[test]
fn tags_are_rendered_from_the_arguments_and_invalidated_one_by_one_or_by_function() {
    let _guard = registry_guard();
    set_backend(MemoryBackend::new());
    let start = computed();
    assert_eq!(profile(7, "acme"), "acme/7");
    assert_eq!(profile(8, "acme"), "acme/8");
    assert_eq!(profile(7, "acme"), "acme/7");
    assert_eq!(computed() - start, 2, "the third call is a hit");

    assert!(invalidate_tag("user:7").is_ok());
    assert_eq!(profile(7, "acme"), "acme/7");
    assert_eq!(profile(8, "acme"), "acme/8");
    assert_eq!(computed() - start, 3, "only user 7's value was recomputed");

    assert!(invalidate_tag("tenant:acme").is_ok());
    assert_eq!(profile(7, "acme"), "acme/7");
    assert_eq!(profile(8, "acme"), "acme/8");
    assert_eq!(computed() - start, 5, "both were tagged tenant:acme");

    assert!(profile_clear().is_ok());
    assert_eq!(profile(7, "acme"), "acme/7");
    assert_eq!(profile(8, "acme"), "acme/8");
    assert_eq!(computed() - start, 7, "profile_clear invalidated both");

    runtime().block_on(async {
        let first = avatar(7).await;
        assert_eq!(avatar(7).await, first, "a hit");
        assert!(invalidate_tag_async("user:7").await.is_ok());
        let second = avatar(7).await;
        assert_ne!(second, first, "recomputed after its tag moved");
        assert_eq!(avatar(7).await, second);
        assert!(avatar_clear_async().await.is_ok());
        assert_ne!(
            avatar(7).await,
            second,
            "recomputed after avatar_clear_async"
        );
    });
    // One function's clear leaves the other's values alone.
    let before = computed();
    assert!(avatar_clear().is_ok());
    assert_eq!(profile(8, "acme"), "acme/8");
    assert_eq!(computed(), before, "profile's values were not cleared");
}

static STREAMED: AtomicU32 = AtomicU32::new(0);

#[cache_memoize(tags = ["user:{id}"])]
fn history(id: u32) -> impl Iterator<Item = u32> {
    let run = STREAMED.fetch_add(1, Ordering::SeqCst);
    (0..3).map(move |i| id * 100 + run * 10 + i)
}

#[test]
fn a_memoized_iterator_takes_tags_and_a_clear() {
    let _guard = registry_guard();
    set_backend(MemoryBackend::new());
    let first: Vec<u32> = history(7).collect();
    assert_eq!(history(7).collect::<Vec<_>>(), first, "a hit");
    let other: Vec<u32> = history(8).collect();

    assert!(invalidate_tag("user:7").is_ok());
    let second: Vec<u32> = history(7).collect();
    assert_ne!(second, first, "recomputed after its tag moved");
    assert_eq!(history(7).collect::<Vec<_>>(), second, "stored again");
    assert_eq!(history(8).collect::<Vec<_>>(), other, "user 8 untouched");

    assert!(history_clear().is_ok());
    assert_ne!(
        history(7).collect::<Vec<_>>(),
        second,
        "history_clear dropped it"
    );
    assert_ne!(history(8).collect::<Vec<_>>(), other, "and user 8's");
}
