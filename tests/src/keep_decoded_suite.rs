//! `keep_decoded` on every backend row: hits may clone a value decoded once (kept by a
//! local tier, the near cache's), and whatever they return is what the bytes say,
//! after writes and invalidations by this caller or another, two builds of one key, a
//! caller's own clock, `cache_none = false` and `Result`, and a `Clone` that panics.
//! Rows without a local tier decode each hit: the same answers. What only a near cache
//! shows, its hit counts and its links, is in `tests/tests/redis_near.rs` and
//! `tests/tests/redis_near/`.

use std::cell::Cell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use cache_memoize::__private::{
    Cacheable, Entry, Inline, Keepable, OptionOutcome, PlainOutcome, ResultOutcome, Share, call,
    call_async,
};
use cache_memoize::{Clock, MemoizeOptions, make_cache_key, refresh};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Fixture, wait_until};

/// `memoize` with `keep_decoded`, as the attribute calls it.
fn kept<T: Cacheable + Keepable>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> T,
) -> T {
    call(key, opts, kept_entry(PlainOutcome), compute)
}

/// A call that keeps values decoded and checks the first one's round trip, as the
/// attribute's `keep_decoded` makes it.
fn kept_entry<S, T: Keepable>(shape: S) -> Entry<S, Inline, T> {
    Entry::new(shape, Inline)
        .share(Some(Share::new()))
        .checked("kept_suite")
}

/// `kept` with `force_overwrite`, by another client of the fixture's store (another
/// process).
fn overwrite<T: Cacheable + Keepable>(f: &Fixture, key: &str, value: T) {
    let opts = MemoizeOptions::new()
        .backend(f.other_client())
        .expire(Duration::from_secs(3600))
        .force_overwrite(true);
    let _: T = kept(key, &opts, || value);
}

/// Invalidates `key` behind the probe's back.
fn invalidate(f: &Fixture, key: &str) {
    let key = make_cache_key(key);
    assert!(
        f.probe
            .inner()
            .invalidate(key.as_str(), &key.lock_key())
            .is_ok()
    );
}

fn hour(f: &Fixture) -> MemoizeOptions {
    f.opts().expire(Duration::from_secs(3600))
}

thread_local! {
    /// `Counted` values decoded on this thread.
    static DECODED: Cell<usize> = const { Cell::new(0) };
}

/// A value whose every decoding is counted (written as its string).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted(String);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODED.set(DECODED.get() + 1);
        String::deserialize(deserializer).map(Counted)
    }
}

/// Hits return the value computed once, sync and async; a row that keeps values
/// decoded ends up answering them without decoding.
pub fn kept_hits_return_the_value_computed_once(f: &Fixture) {
    let key = f.key("kept-hits");
    let runs = AtomicUsize::new(0);
    let compute = || {
        runs.fetch_add(1, Ordering::SeqCst);
        Counted("computed".into())
    };
    assert_eq!(kept(&key, &hour(f), compute).0, "computed");
    for _ in 0..100 {
        assert_eq!(kept(&key, &hour(f), compute).0, "computed");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else {
        panic!("cannot start a runtime")
    };
    for _ in 0..10 {
        let found = rt.block_on(call_async(
            &key,
            &hour(f),
            kept_entry(ResultOutcome),
            || async { Ok::<_, Infallible>(compute()) },
        ));
        assert_eq!(found.map(|c| c.0).ok().as_deref(), Some("computed"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once");
    let kept_here = f
        .probe
        .inner()
        .decoded(make_cache_key(&key).as_str(), &|_| true)
        .is_some();
    if kept_here {
        // A near tier may drop its copies at any time (a tracking link that missed its
        // heartbeat on a loaded machine is reconnected and the tier flushed): the next
        // read then decodes once more. Kept values that are not used decode on every
        // hit, in each of three rounds of 100; a flush spoils at most a round.
        let mut decodes = Vec::new();
        for _ in 0..3 {
            let before = DECODED.get();
            for _ in 0..100 {
                assert_eq!(kept(&key, &hour(f), compute).0, "computed");
            }
            decodes.push(DECODED.get() - before);
            if decodes.last() == Some(&0) {
                break;
            }
        }
        assert_eq!(
            decodes.last(),
            Some(&0),
            "hits on a kept value decode nothing (decodes per round of 100: {decodes:?})"
        );
    }
}

/// Writes and invalidations by another caller replace or drop the kept value: never
/// served after them.
pub fn writes_and_invalidations_elsewhere_replace_the_kept_value(f: &Fixture) {
    let key = f.key("kept-writes");
    let computed = || Counted("computed".into());
    assert_eq!(kept(&key, &hour(f), computed).0, "computed");
    for round in 0..10 {
        let value = format!("written {round}");
        overwrite(f, &key, Counted(value.clone()));
        wait_until("the reader sees the new value", || {
            kept(&key, &hour(f), computed).0 == value
        });
        for _ in 0..20 {
            assert_eq!(
                kept(&key, &hour(f), computed).0,
                value,
                "never back to the kept value"
            );
        }
    }
    invalidate(f, &key);
    let runs = AtomicUsize::new(0);
    let again = || {
        runs.fetch_add(1, Ordering::SeqCst);
        Counted("computed again".into())
    };
    wait_until("the reader computes again", || {
        kept(&key, &hour(f), again).0 == "computed again"
    });
    for _ in 0..20 {
        assert_eq!(kept(&key, &hour(f), again).0, "computed again");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

type Hook = Box<dyn FnOnce() + Send>;

/// Hooks run (once) by the next decoding of a `Hooked` of their text: between the
/// reader's bytes and the kept value it offers for them.
static HOOKS: Mutex<Option<HashMap<String, Hook>>> = Mutex::new(None);

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Hooked(String);

impl<'de> Deserialize<'de> for Hooked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let hook = HOOKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .remove(&text);
        if let Some(hook) = hook {
            hook();
        }
        Ok(Hooked(text))
    }
}

/// A write (even rounds) or an invalidation (odd rounds) that lands between a read's
/// bytes and the kept value offered for them: the value kept from the old bytes is
/// never served after it.
pub fn a_change_between_the_bytes_and_the_kept_value_is_never_served_after(f: &Fixture) {
    let computed = AtomicUsize::new(0);
    for round in 0..6 {
        let name = f.key(&format!("kept-race:{round}"));
        let (old, new) = (format!("old {name}"), format!("new {name}"));
        overwrite(f, &name, Hooked(old.clone()));
        let rewrite = round % 2 == 0;
        let (inner, n, k) = (f.other_client(), new.clone(), name.clone());
        let reader = Arc::clone(f.probe.inner());
        let hook: Hook = Box::new(move || {
            let key = make_cache_key(&k);
            // Until the reader's backend answers with what the store holds now (a near
            // cache learns of another client's write through its invalidation link).
            let settled = || {
                let read = reader.get(key.as_str()).ok().flatten();
                if rewrite {
                    read.is_some_and(|bytes| bytes.ends_with(n.as_bytes()))
                } else {
                    read.is_none()
                }
            };
            if rewrite {
                let opts = MemoizeOptions::new()
                    .backend(Arc::clone(&inner))
                    .force_overwrite(true);
                let _: Hooked = kept(&k, &opts.expire(Duration::from_secs(3600)), || {
                    Hooked(n.clone())
                });
            } else {
                assert!(inner.invalidate(key.as_str(), &key.lock_key()).is_ok());
            }
            wait_until(
                "the reader's backend answers with what the store holds",
                settled,
            );
        });
        let mut hooks = HOOKS.lock().unwrap_or_else(PoisonError::into_inner);
        hooks
            .get_or_insert_with(HashMap::new)
            .insert(old.clone(), hook);
        drop(hooks);
        let compute = || {
            computed.fetch_add(1, Ordering::SeqCst);
            Hooked(format!("computed {name}"))
        };
        assert_eq!(
            kept(&name, &hour(f), compute).0,
            old,
            "the call that read the old bytes"
        );
        let expected = if rewrite {
            new
        } else {
            format!("computed {name}")
        };
        for _ in 0..50 {
            let read = kept(&name, &hour(f), compute).0;
            assert_eq!(
                read, expected,
                "round {round}: a value kept from the old bytes"
            );
        }
    }
    assert_eq!(computed.load(Ordering::SeqCst), 3);
}

/// Two builds of one key (another version, another type of the same encoding) each
/// read their own value: a kept value of the other build is never taken.
pub fn two_builds_of_one_key_keep_their_own_values(f: &Fixture) {
    let key = f.key("kept-builds");
    let (v1, v2, bytes) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let build = |version: u32| hour(f).version(version);
    for round in 0..5 {
        for _ in 0..20 {
            let read = kept(&key, &build(1), || {
                v1.fetch_add(1, Ordering::SeqCst);
                "v1".to_owned()
            });
            assert_eq!(read, "v1", "round {round}");
        }
        for _ in 0..20 {
            let read = kept(&key, &build(1), || {
                bytes.fetch_add(1, Ordering::SeqCst);
                b"bytes".to_vec()
            });
            assert_eq!(read, b"bytes".to_vec(), "round {round}");
        }
        for _ in 0..20 {
            let read = kept(&key, &build(2), || {
                v2.fetch_add(1, Ordering::SeqCst);
                "v2".to_owned()
            });
            assert_eq!(read, "v2", "round {round}");
        }
    }
    for runs in [&v1, &v2, &bytes] {
        assert_eq!(
            runs.load(Ordering::SeqCst),
            5,
            "each build computes once a round"
        );
    }
}

/// A clock `secs` ahead of the system's.
struct Ahead(AtomicU64);

impl Clock for Ahead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// A kept value is judged by the caller's clock: past `expire + stale` it is never
/// served; within `stale` it is served while one refresh runs.
pub fn a_kept_value_is_judged_by_the_callers_clock(f: &Fixture) {
    let clock = Arc::new(Ahead(AtomicU64::new(0)));
    let opts = hour(f)
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let runs = AtomicUsize::new(0);
    let call = |key: &str| {
        kept(key, &opts, || {
            format!("#{}", runs.fetch_add(1, Ordering::SeqCst) + 1)
        })
    };
    let (one, two) = (f.key("kept-clock:1"), f.key("kept-clock:2"));
    assert_eq!(call(&one), "#1");
    for _ in 0..20 {
        assert_eq!(call(&one), "#1");
    }
    clock.0.store(3 * 3600, Ordering::SeqCst);
    assert_eq!(call(&one), "#2", "a kept value past its TTL");
    clock.0.store(0, Ordering::SeqCst);
    for _ in 0..20 {
        let _ = call(&two);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    clock.0.store(5400, Ordering::SeqCst);
    let stale = call(&two);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "a stale kept value is refreshed ({stale})"
    );
}

/// With `cache_none = false` a `None` is not stored (nor kept); an `Err` neither.
pub fn none_and_errors_are_never_kept(f: &Fixture) {
    let key = f.key("kept-option");
    let (runs, some) = (AtomicUsize::new(0), AtomicBool::new(false));
    let optional = || {
        call(&key, &hour(f), kept_entry(OptionOutcome), || {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            some.load(Ordering::SeqCst).then(|| format!("some #{run}"))
        })
    };
    assert_eq!(optional(), None);
    assert_eq!(optional(), None);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "None is not stored");
    some.store(true, Ordering::SeqCst);
    assert_eq!(optional().as_deref(), Some("some #3"));
    for _ in 0..20 {
        assert_eq!(optional().as_deref(), Some("some #3"));
    }
    let key = f.key("kept-result");
    let (runs, ok) = (AtomicUsize::new(0), AtomicBool::new(false));
    let fallible = || {
        call(&key, &hour(f), kept_entry(ResultOutcome), || {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            if ok.load(Ordering::SeqCst) {
                Ok(format!("ok #{run}"))
            } else {
                Err(format!("err #{run}"))
            }
        })
    };
    assert_eq!(fallible(), Err("err #1".to_owned()));
    assert_eq!(fallible(), Err("err #2".to_owned()));
    ok.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(fallible(), Ok("ok #3".to_owned()));
    }
}

thread_local! {
    /// Whether `Fragile::clone` panics on this thread.
    static PANIC_ON_CLONE: Cell<bool> = const { Cell::new(false) };
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Fragile(String);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!PANIC_ON_CLONE.get(), "Fragile::clone panics");
        Self(self.0.clone())
    }
}

/// A `Clone` that panics while a value is kept or taken back: the caller sees the
/// panic, and the right value is served afterwards, computed once per key.
pub fn a_panicking_clone_leaves_the_right_value_served(f: &Fixture) {
    let runs = AtomicUsize::new(0);
    for id in 0..5 {
        let key = f.key(&format!("kept-fragile:{id}"));
        let call = || {
            kept(&key, &hour(f), || {
                Fragile(format!("#{}", runs.fetch_add(1, Ordering::SeqCst) + 1))
            })
        };
        let panics = || {
            PANIC_ON_CLONE.set(true);
            let panicked = catch_unwind(AssertUnwindSafe(call)).is_err();
            PANIC_ON_CLONE.set(false);
            panicked
        };
        let first = call();
        let _ = panics();
        for _ in 0..20 {
            assert_eq!(call(), first, "after a panic while keeping");
        }
        let _ = panics();
        for _ in 0..20 {
            assert_eq!(call(), first, "after a panic while taking");
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 5, "computed once per key");
}

/// This caller's own `refresh` and invalidation are read back (never the value kept
/// before them), while another thread hits the key all the time and never goes back
/// to an older value while only refreshes write.
pub fn own_refreshes_and_invalidations_are_read_back(f: &Fixture) {
    let key = f.key("kept-rw");
    let runs = Arc::new(AtomicUsize::new(0));
    let call = {
        let (opts, key, runs) = (hour(f), key.clone(), Arc::clone(&runs));
        move || kept(&key, &opts, || runs.fetch_add(1, Ordering::SeqCst) + 1)
    };
    let first = call();
    assert_eq!(call(), first);
    let (stop, refreshing) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(true)),
    );
    let hammer = {
        let (stop, refreshing, call) = (Arc::clone(&stop), Arc::clone(&refreshing), call.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::SeqCst) {
                let run = call();
                if refreshing.load(Ordering::SeqCst) {
                    assert!(run >= seen, "went back from #{seen} to #{run}");
                }
                seen = seen.max(run);
            }
        })
    };
    for round in 0..30 {
        let stored = refresh(&call);
        for _ in 0..5 {
            let read = call();
            assert!(
                read >= stored,
                "round {round}: refreshed #{stored} then read #{read}"
            );
        }
    }
    refreshing.store(false, Ordering::SeqCst);
    for round in 0..30 {
        let before = call();
        let cache_key = make_cache_key(&key);
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        assert_ne!(
            call(),
            before,
            "round {round}: the value read before the invalidation"
        );
    }
    stop.store(true, Ordering::SeqCst);
    assert!(hammer.join().is_ok(), "the hitting thread failed");
}
