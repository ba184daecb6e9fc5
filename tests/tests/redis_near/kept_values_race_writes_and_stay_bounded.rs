//! `keep_decoded` with a near cache, against another process: races between a read's
//! bytes and the kept value offered for them (answered near afterwards), and the near
//! cache's byte bound under many keys and kept values. (Two builds of one key, a kept
//! value judged by a `clock`, `cache_none = false` and `Result` run on every backend
//! row: `tests/src/keep_decoded_suite.rs`.)
//!
//! The attribute runs against the registered backend, global to the process: the test
//! holds the registry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cache_memoize::{
    Backend, CacheBackend, MemoizeOptions, NearCache, RedisBackend, cache_memoize, make_cache_key,
    memoize,
};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{near, wait_until};
use serde::{Deserialize, Deserializer, Serialize};

type Hook = Box<dyn FnOnce() + Send>;

/// Run (once) by the next decoding of a `Hooked` whose text is `HOOK_ON`: between the
/// reader's bytes and the kept value it offers for them.
static HOOK: Mutex<Option<Hook>> = Mutex::new(None);
static HOOK_ON: Mutex<String> = Mutex::new(String::new());
static RACED_COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Hooked(String);

impl<'de> Deserialize<'de> for Hooked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let armed = *HOOK_ON.lock().unwrap_or_else(PoisonError::into_inner) == text;
        if armed {
            let hook = HOOK.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(hook) = hook {
                hook();
            }
        }
        Ok(Hooked(text))
    }
}

fn arm(on: &str, hook: Hook) {
    on.clone_into(&mut HOOK_ON.lock().unwrap_or_else(PoisonError::into_inner));
    *HOOK.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
}

fn hook_ran() -> bool {
    HOOK.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_none()
}

#[cache_memoize(key = "race:{id}", shared_key, expire = "1h", keep_decoded)]
fn raced(id: u32) -> Hooked {
    RACED_COMPUTED.fetch_add(1, Ordering::SeqCst);
    Hooked(format!("computed {id}"))
}

// Many keys, sizes and kept values under a small bound.
#[cache_memoize(key = "bound:{id}:{size}", shared_key, expire = "1h", keep_decoded)]
fn sized(id: u32, size: usize) -> (u32, Vec<u8>) {
    #[allow(clippy::cast_possible_truncation)]
    (id, vec![id as u8; size])
}

/// Stores `value` under `key` through `writer` (another process), overwriting.
fn write(writer: &Arc<RedisBackend>, key: &str, value: &str) {
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(writer) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .force_overwrite(true);
    let stored: Hooked = memoize(key, &opts, || Hooked(value.to_owned()));
    assert_eq!(stored.0, value);
}

/// Waits until `raced(id)` has been answered without a decoding a hundred times.
fn settle(reader: &Arc<RedisBackend>, id: u32, expected: &str) {
    wait_until("near hits answer it", || {
        let hits = reader.near_cache_hits();
        for _ in 0..20 {
            assert_eq!(raced(id).0, expected);
        }
        reader.near_cache_hits() >= hits + 20
    });
}

#[test]
fn kept_values_race_writes_and_stay_bounded() {
    let _registry = cache_memoize_tests::registry_guard();
    let server = RedisServer::start();
    let reader = near::register_near(vec![server.url()], false, NearCache::new());
    let writer = near::connect(vec![server.url()], false, None);

    races(&reader, &writer);
    drop(reader);
    bound(&server, &writer);
}

fn races(reader: &Arc<RedisBackend>, writer: &Arc<RedisBackend>) {
    eprintln!("scenario: a write or an invalidation lands between the bytes and the kept value");
    for round in 0..10 {
        let id = 100 + round;
        let key = make_cache_key(&format!("race:{id}"));
        let old = format!("old {id}");
        let new = format!("new {id}");
        write(writer, &format!("race:{id}"), &old);
        // The reader's first call reads the old bytes from Redis (a near miss), keeps
        // them near, and decodes them: meanwhile another process writes the new value
        // (even rounds) or invalidates the key (odd rounds), and the reader's near
        // tier is seen to answer with what Redis now holds (the new bytes, near again,
        // or nothing).
        let (w, r) = (Arc::clone(writer), Arc::clone(reader));
        let (k, n) = (key.as_str().to_owned(), new.clone());
        let rewrite = round % 2 == 0;
        arm(
            &old,
            Box::new(move || {
                if rewrite {
                    write(&w, &format!("race:{id}"), &n);
                } else {
                    let key = make_cache_key(&k);
                    assert!(w.invalidate(&k, &key.lock_key()).is_ok());
                }
                // The new bytes answered near (even rounds), or nothing (odd rounds).
                wait_until("the reader's backend answers with what Redis holds", || {
                    let hits = r.near_cache_hits();
                    let read = Backend::get(&*r, &k).ok().flatten();
                    if rewrite {
                        read.is_some_and(|bytes| bytes.ends_with(n.as_bytes()))
                            && r.near_cache_hits() > hits
                    } else {
                        read.is_none()
                    }
                });
            }),
        );
        let first = raced(id).0;
        assert!(hook_ran(), "the hook ran during the first call");
        assert_eq!(first, old, "the call that read the old bytes");
        let expected = if rewrite {
            new.clone()
        } else {
            format!("computed {id}")
        };
        for _ in 0..50 {
            assert_eq!(
                raced(id).0,
                expected,
                "round {round}: a value kept from the old bytes was served after the change"
            );
        }
        settle(reader, id, &expected);
    }
    assert_eq!(RACED_COMPUTED.load(Ordering::SeqCst), 5);
}

fn bound(server: &RedisServer, writer: &Arc<RedisBackend>) {
    eprintln!("scenario: many keys and kept values under a small bound");
    // 16 shards of 2 KiB: a few entries each, kept values charged twice.
    let small = near::register_near(
        vec![server.url()],
        false,
        NearCache::new().capacity(16 * 2048),
    );
    let threads: Vec<_> = (0..4_u32)
        .map(|t| {
            let writer = Arc::clone(writer);
            std::thread::spawn(move || {
                for round in 0..400_u32 {
                    // 24 keys of seven sizes (the largest not kept decoded, the
                    // largest not kept at all), revisited by every thread.
                    let id = (round * 7 + t * 5) % 24;
                    let size = [0, 1, 100, 500, 900, 1100, 2000][(id % 7) as usize];
                    let (got_id, bytes) = sized(id, size);
                    assert_eq!(got_id, id);
                    assert_eq!(bytes.len(), size);
                    if round % 50 == 0 {
                        let key = make_cache_key(&format!("bound:{id}:{size}"));
                        assert!(writer.invalidate(key.as_str(), &key.lock_key()).is_ok());
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().is_ok(), "a thread panicked");
    }
    assert!(small.near_cache_hits() > 0);
}
