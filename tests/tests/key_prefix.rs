//! The global key prefix (its own test binary: the prefix is process-wide, so the
//! tests here take turns through `PREFIX`).

use std::sync::{Arc, Mutex, PoisonError};

use cache_memoize::{
    Backend, CacheLock, MemoizeOptions, MemoryBackend, make_cache_key, memoize, set_key_prefix,
};

static PREFIX: Mutex<()> = Mutex::new(());

#[test]
fn the_prefix_namespaces_values_and_locks() {
    let _turn = PREFIX.lock().unwrap_or_else(PoisonError::into_inner);
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

#[test]
fn an_iterator_keeps_the_key_it_started_with() {
    let _turn = PREFIX.lock().unwrap_or_else(PoisonError::into_inner);
    let backend = Arc::new(MemoryBackend::new());
    let opts = MemoizeOptions::new()
        .backend(backend)
        .chunk_size(24)
        .compress(false);
    set_key_prefix("before");
    let mut items = cache_memoize::memoize_iter("rows", &opts, || 0..10_u8);
    assert_eq!(items.next(), Some(0));
    set_key_prefix("after"); // chunks already written stay under the old key
    assert_eq!(items.collect::<Vec<_>>(), (1..10).collect::<Vec<_>>());
    set_key_prefix("before");
    let again: Vec<u8> = cache_memoize::memoize_iter("rows", &opts, || 0..0_u8).collect();
    assert_eq!(
        again,
        (0..10).collect::<Vec<_>>(),
        "stored whole under the key it began with"
    );
    set_key_prefix("");
}

#[test]
fn a_thread_that_made_keys_before_sees_a_new_prefix() {
    let _turn = PREFIX.lock().unwrap_or_else(PoisonError::into_inner);
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (answer, answers) = std::sync::mpsc::channel::<String>();
    // A long-lived thread (a worker) keeps its own copy of the prefix between keys.
    let worker = std::thread::spawn(move || {
        while asked.recv().is_ok() {
            let key = make_cache_key("k").as_str().to_owned();
            if answer.send(key).is_err() {
                break;
            }
        }
    });
    let key_on_worker = || {
        ask.send(()).ok();
        answers.recv().unwrap_or_default()
    };
    set_key_prefix("one");
    assert_eq!(key_on_worker(), "{one:k}");
    set_key_prefix("two");
    assert_eq!(
        key_on_worker(),
        "{two:k}",
        "the worker's copy was refreshed"
    );
    assert_eq!(make_cache_key("k").as_str(), "{two:k}");
    set_key_prefix("");
    assert_eq!(key_on_worker(), "{k}");
    drop(ask);
    assert!(worker.join().is_ok());
}
