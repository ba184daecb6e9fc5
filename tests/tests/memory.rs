//! The behaviour suite against the in-process `MemoryBackend`.

use std::sync::Arc;

use cache_memoize::MemoryBackend;
use cache_memoize_tests::Fixture;

cache_memoize_tests::backend_suite!(Fixture::new(Arc::new(MemoryBackend::new())));

/// Values written while a lock is held never evict it, however many and large: a
/// second acquisition keeps failing (no second holder), and the memoized call that
/// holds it stores its value.
#[test]
fn a_held_lock_is_never_evicted_by_values() {
    use cache_memoize::{Backend, CacheLock};
    use std::time::Duration;

    let backend = Arc::new(MemoryBackend::with_capacity(8 * 1024 * 1024));
    let lock = CacheLock::new("held-under-pressure").backend(backend.clone());
    let Ok(guard) = lock.acquire() else {
        panic!("a free lock is acquired");
    };
    let megabyte = vec![7_u8; 1024 * 1024];
    for i in 0..80 {
        assert!(
            backend
                .set(&format!("big:{i}"), &megabyte, Duration::from_secs(60))
                .is_ok()
        );
    }
    assert!(
        backend.used_bytes() <= 8 * 1024 * 1024,
        "values are still bounded"
    );
    assert!(
        matches!(lock.try_acquire(), Ok(None)),
        "the lock survived the values"
    );
    assert!(guard.release().is_ok_and(|ours| ours));
}
