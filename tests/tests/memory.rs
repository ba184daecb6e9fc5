//! The behaviour suite against the in-process `MemoryBackend`.

use std::sync::Arc;

use cache_memoize::MemoryBackend;

cache_memoize_tests::backend_suite!(Arc::new(MemoryBackend::new()));
