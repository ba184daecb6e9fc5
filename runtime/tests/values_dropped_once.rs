//! Every value the blocking drive loop is handed is dropped once (7d4f5e6
//! keeps I/O steps in `ManuallyDrop`): a value type that counts its live instances is
//! memoized through misses, hits, large values, forced refreshes, stale serves and
//! locked misses, blocking and async; none is left alive, none dropped twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use cache_memoize::{LockOptions, MemoizeOptions, MemoryBackend, memoize, memoize_async, refresh};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// A value that counts its live instances.
#[derive(Debug, PartialEq)]
struct Counted(Vec<u8>);

impl Counted {
    fn new(bytes: Vec<u8>) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Self(bytes)
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(Self::new)
    }
}

#[test]
fn no_value_is_leaked_or_dropped_twice_by_the_drive_loop() {
    let backend = Arc::new(MemoryBackend::new());
    for (name, len) in [("small", 10), ("large", 1_200_000)] {
        for locked in [false, true] {
            let mut opts = MemoizeOptions::new()
                .backend(backend.clone())
                .large_values(1024)
                .stale(Duration::from_secs(60));
            if locked {
                opts = opts.lock(LockOptions::default());
            }
            let key = format!("drops:{name}:{locked}");
            for _ in 0..3 {
                let v: Counted = memoize(&key, &opts, || Counted::new(vec![1; len]));
                assert_eq!(v.0.len(), len);
                drop(v);
                let v: Counted = refresh(|| memoize(&key, &opts, || Counted::new(vec![2; len])));
                drop(v);
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    for _ in 0..3 {
                        let v: Counted =
                            memoize_async(&key, &opts, || async { Counted::new(vec![3; len]) })
                                .await;
                        drop(v);
                    }
                });
            }
        }
    }
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        0,
        "live values after every call returned"
    );
}
