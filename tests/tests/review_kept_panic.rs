//! Review of `keep_decoded`: a `Clone` that panics, while the value is being kept (under
//! the near cache's shard lock) and while a kept value is taken back. The caller sees
//! the panic; the near cache goes on serving the right value afterwards.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cache_memoize::{NearCache, cache_memoize};
use cache_memoize_tests::near;
use cache_memoize_tests::server::RedisServer;
use serde::{Deserialize, Serialize};

static PANIC_ON_CLONE: AtomicBool = AtomicBool::new(false);
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Fragile(String);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(
            !PANIC_ON_CLONE.load(Ordering::SeqCst),
            "Fragile::clone panics"
        );
        Self(self.0.clone())
    }
}

#[cache_memoize(key = "fragile:{id}", expire = "1h", keep_decoded)]
fn fragile(id: u32) -> Fragile {
    Fragile(format!("{id} #{}", RUNS.fetch_add(1, Ordering::SeqCst) + 1))
}

fn panics(id: u32) -> bool {
    catch_unwind(AssertUnwindSafe(|| fragile(id))).is_err()
}

#[test]
fn a_panicking_clone_leaves_the_near_cache_serving_the_right_value() {
    let server = RedisServer::start();
    let reader = near::register_near(vec![server.url()], false, NearCache::new());

    for id in 0..20 {
        let first = fragile(id);
        // The next read keeps the value (cloning it under the shard lock): it panics.
        PANIC_ON_CLONE.store(true, Ordering::SeqCst);
        let panicked = panics(id);
        PANIC_ON_CLONE.store(false, Ordering::SeqCst);
        for _ in 0..20 {
            assert_eq!(fragile(id), first, "after a panic while keeping");
        }
        // Now kept: taking it back clones it, and panics.
        PANIC_ON_CLONE.store(true, Ordering::SeqCst);
        let panicked_taking = panics(id);
        PANIC_ON_CLONE.store(false, Ordering::SeqCst);
        assert!(panicked || panicked_taking);
        for _ in 0..20 {
            assert_eq!(fragile(id), first, "after a panic while taking");
        }
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), 20, "computed once per key");
    assert!(reader.near_cache_hits() > 0);
}
