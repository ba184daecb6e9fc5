//! The behaviour suite against the in-process `MemoryBackend`.

use std::sync::Arc;

use cache_memoize::MemoryBackend;
use cache_memoize_tests::Fixture;

cache_memoize_tests::backend_suite!(Fixture::new(Arc::new(MemoryBackend::new())));
