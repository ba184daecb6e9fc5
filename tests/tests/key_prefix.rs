//! The global key prefix (its own test binary: the prefix is process-wide).

use std::sync::Arc;

use cache_memoize::{
    Backend, CacheLock, MemoizeOptions, MemoryBackend, make_cache_key, memoize, set_key_prefix,
};

#[test]
fn the_prefix_namespaces_values_and_locks() {
    let backend = Arc::new(MemoryBackend::new());
    set_key_prefix("site a");
    let opts = MemoizeOptions::new().backend(backend.clone());
    assert_eq!(memoize("shared", &opts, || 1_u32), 1);
    assert_eq!(make_cache_key("shared").as_str(), "{site%20a:shared}");
    assert_eq!(CacheLock::new("shared").key(), "_lock_:{site%20a:shared}");
    assert!(matches!(backend.get("{site%20a:shared}"), Ok(Some(_))));

    set_key_prefix("site-b");
    assert_eq!(
        memoize("shared", &opts, || 2_u32),
        2,
        "another prefix, another value"
    );
    set_key_prefix("site a");
    assert_eq!(memoize("shared", &opts, || 3_u32), 1);
    set_key_prefix("");
    assert_eq!(make_cache_key("shared").as_str(), "{shared}");
}
