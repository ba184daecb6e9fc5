//! `CacheLock` scenarios, ported from Djblets' `CacheLock` tests.

use std::sync::mpsc;
use std::time::Duration;

use cache_memoize::{CacheLock, LockError};

use crate::{Fixture, runtime, wait_until};

fn lock(f: &Fixture, name: &str) -> CacheLock {
    CacheLock::new(&f.key(name))
        .backend(f.backend())
        .retry(Duration::from_millis(10))
}

fn held_token(f: &Fixture, lock: &CacheLock) -> Option<String> {
    let bytes = f.probe.inner().get(lock.key()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

/// A free lock is taken at once and holds a UUID4 token.
pub fn acquire_new_lock(f: &Fixture) {
    let lock = lock(f, "new");
    let guard = lock.acquire().ok();
    let guard = guard.as_ref();
    assert!(guard.is_some(), "a free lock is acquired");
    let token = guard.map(|g| g.token().to_owned()).unwrap_or_default();
    assert_eq!(
        uuid::Uuid::parse_str(&token)
            .map(|u| u.get_version_num())
            .ok(),
        Some(4)
    );
    assert_eq!(held_token(f, &lock), Some(token));
    assert!(lock.key().starts_with("_lock_:"));
    assert!(matches!(lock.is_locked(), Ok(true)));
}

/// Acquiring a held lock without blocking fails at once; the holder keeps it.
pub fn held_lock_non_blocking_would_block(f: &Fixture) {
    let lock = lock(f, "nonblocking");
    let Ok(held) = lock.acquire() else {
        panic!("first acquire")
    };
    let attempt = lock.clone().blocking(false).acquire();
    assert!(matches!(attempt, Err(LockError::WouldBlock)), "{attempt:?}");
    assert_eq!(held_token(f, &lock).as_deref(), Some(held.token()));
}

/// `try_acquire` returns `None` on a held lock and a guard on a free one.
pub fn try_acquire_never_waits(f: &Fixture) {
    let lock = lock(f, "try");
    let Ok(Some(held)) = lock.try_acquire() else {
        panic!("free lock")
    };
    assert!(matches!(lock.try_acquire(), Ok(None)));
    drop(held);
    assert!(matches!(lock.try_acquire(), Ok(Some(_))));
}

/// A blocking acquire waits while the lock is held and takes it once released.
pub fn held_lock_blocking_waits_for_release(f: &Fixture) {
    let lock = lock(f, "blocking");
    let Ok(held) = lock.acquire() else {
        panic!("first acquire")
    };
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let guard = lock.acquire();
            let token = guard.as_ref().map(|g| g.token().to_owned()).ok();
            let _ = tx.send(token);
            guard.map(|g| g.release().ok()).ok()
        })
    };
    // While we hold it, the waiter cannot have it.
    assert!(rx.try_recv().is_err());
    let ours = held.token().to_owned();
    assert!(matches!(held.release(), Ok(true)));
    let theirs = rx.recv().ok().flatten();
    assert!(theirs.is_some(), "the waiter acquired after the release");
    assert_ne!(
        theirs.as_deref(),
        Some(ours.as_str()),
        "a fresh token per acquisition"
    );
    assert_eq!(waiter.join().ok().flatten().flatten(), Some(true));
}

/// A blocking acquire with a timeout gives up with an error naming the key.
pub fn held_lock_times_out_naming_the_key(f: &Fixture) {
    let lock = lock(f, "timeout");
    let Ok(held) = lock.acquire() else {
        panic!("first acquire")
    };
    let limit = Duration::from_millis(40);
    match lock.clone().timeout(Some(limit)).acquire() {
        Err(LockError::Timeout { key, waited }) => {
            assert_eq!(key, lock.key());
            assert!(waited >= limit, "waited {waited:?}");
            assert!(
                LockError::Timeout {
                    key: key.clone(),
                    waited
                }
                .to_string()
                .contains(&key)
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    match lock.acquire_timeout(limit) {
        Err(LockError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(held_token(f, &lock).as_deref(), Some(held.token()));
}

/// Releasing deletes the lock and reports that it was ours.
pub fn release_deletes_the_lock(f: &Fixture) {
    let lock = lock(f, "release");
    let Ok(guard) = lock.acquire() else {
        panic!("acquire")
    };
    assert!(matches!(guard.release(), Ok(true)));
    assert_eq!(held_token(f, &lock), None);
    assert!(matches!(lock.is_locked(), Ok(false)));
}

/// After our lock was replaced by another owner's, release returns false and the
/// other owner's lock survives.
pub fn release_after_token_replaced_keeps_the_other_token(f: &Fixture) {
    let lock = lock(f, "replaced");
    let Ok(guard) = lock.acquire() else {
        panic!("acquire")
    };
    let other = "another-owner";
    assert!(
        f.probe
            .inner()
            .set(lock.key(), other.as_bytes(), Duration::from_secs(60))
            .is_ok()
    );
    assert!(matches!(guard.release(), Ok(false)));
    assert_eq!(held_token(f, &lock).as_deref(), Some(other));
}

/// After our lock expired, release returns false.
pub fn release_after_expiry_returns_false(f: &Fixture) {
    let lock = lock(f, "expired").expire(Duration::from_millis(5));
    let Ok(guard) = lock.acquire() else {
        panic!("acquire")
    };
    wait_until("the lock expires", || matches!(lock.is_locked(), Ok(false)));
    assert!(matches!(guard.release(), Ok(false)));
}

/// Extending a held lock succeeds and keeps our token.
pub fn extend_keeps_the_lock(f: &Fixture) {
    let lock = lock(f, "extend").expire(Duration::from_secs(2));
    let Ok(mut guard) = lock.acquire() else {
        panic!("acquire")
    };
    assert!(matches!(
        guard.extend(Some(Duration::from_secs(60))),
        Ok(true)
    ));
    assert!(matches!(guard.extend(None), Ok(true)));
    assert_eq!(held_token(f, &lock).as_deref(), Some(guard.token()));
}

/// Extending a lost lock returns false and leaves the new owner's lock alone.
pub fn extend_after_lock_lost_leaves_the_new_owner_alone(f: &Fixture) {
    let lock = lock(f, "extend-lost");
    let Ok(mut guard) = lock.acquire() else {
        panic!("acquire")
    };
    assert!(f.probe.inner().delete(lock.key()).is_ok());
    let Ok(Some(new_owner)) = lock.try_acquire() else {
        panic!("the lock is free again")
    };
    assert!(matches!(guard.extend(None), Ok(false)));
    assert!(matches!(guard.release(), Ok(false)));
    assert_eq!(held_token(f, &lock).as_deref(), Some(new_owner.token()));
}

/// A guard going out of scope releases the lock.
pub fn dropped_guard_releases(f: &Fixture) {
    let lock = lock(f, "scoped");
    {
        let _guard = lock.acquire();
        assert!(matches!(lock.is_locked(), Ok(true)));
    }
    assert!(matches!(lock.is_locked(), Ok(false)));
}

/// A panic while holding the guard releases the lock.
pub fn guard_released_during_panic(f: &Fixture) {
    let lock = lock(f, "panic");
    let holder = lock.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guard = holder.acquire();
        panic!("the work failed");
    }));
    assert!(outcome.is_err());
    assert!(matches!(lock.is_locked(), Ok(false)));
}

/// `acquire_async` waits, without blocking the executor, until the lock is released.
pub fn acquire_async_waits_for_release(f: &Fixture) {
    let lock = lock(f, "async");
    runtime().block_on(async {
        let Ok(held) = lock.acquire_async().await else {
            panic!("first acquire")
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let lock = lock.clone();
            tokio::spawn(async move {
                let _ = tx.send(());
                let guard = lock.acquire_async().await;
                guard.map(|g| g.token().to_owned()).ok()
            })
        };
        let _ = rx.await;
        // The executor keeps running other work while the waiter waits.
        tokio::task::yield_now().await;
        let ours = held.token().to_owned();
        assert!(matches!(held.release_async().await, Ok(true)));
        let theirs = waiter.await.ok().flatten();
        assert!(theirs.is_some_and(|t| t != ours));
    });
}

/// A non-blocking `acquire_async` on a held lock fails at once.
pub fn acquire_async_non_blocking_would_block(f: &Fixture) {
    let lock = lock(f, "async-nonblocking");
    runtime().block_on(async {
        let Ok(_held) = lock.acquire_async().await else {
            panic!("first acquire")
        };
        let attempt = lock.clone().blocking(false).acquire_async().await;
        assert!(matches!(attempt, Err(LockError::WouldBlock)), "{attempt:?}");
    });
}

/// Each acquisition's fencing token is larger than every earlier one's, across
/// owners, releases and expiries.
pub fn fencing_tokens_increase_with_every_acquisition(f: &Fixture) {
    let lock = lock(f, "fenced");
    let mut last = 0;
    for round in 0..5 {
        let guard = lock.acquire();
        let token = guard
            .as_ref()
            .map_or(0, cache_memoize::LockGuard::fencing_token);
        assert!(token > last, "round {round}: {token} after {last}");
        last = token;
        if round % 2 == 0 {
            assert!(guard.is_ok_and(|g| g.release().is_ok_and(|ours| ours)));
        } else {
            // Lost, as if it expired: the next owner still gets a larger token.
            assert!(f.probe.inner().delete(lock.key()).is_ok());
            drop(guard);
        }
    }
}

/// A guard whose lock was lost says so once an extension finds it gone.
pub fn a_lost_lock_is_reported_by_its_guard(f: &Fixture) {
    let lock = lock(f, "lost");
    let Ok(mut guard) = lock.acquire() else {
        panic!("a free lock is acquired");
    };
    assert!(!guard.is_lost());
    assert!(matches!(guard.extend(None), Ok(true)));
    assert!(!guard.is_lost());
    assert!(f.probe.inner().delete(lock.key()).is_ok());
    assert!(matches!(guard.extend(None), Ok(false)));
    assert!(guard.is_lost());
}
