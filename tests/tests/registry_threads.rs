//! The registered backend as each thread holds it (a handle per thread, so a call
//! touches no shared reference count): a registration reaches every thread's next
//! call, and no thread's handle keeps a replaced backend once it has called again or
//! ended. Its own binary: the registry is global to it.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread;

use cache_memoize::{CacheBackend, MemoizeOptions, MemoryBackend, memoize, set_backend};
use cache_memoize_tests::wait_until;

fn call(computed: u32) -> u32 {
    memoize("registry-threads:k", &MemoizeOptions::new(), || computed)
}

#[test]
fn a_registration_reaches_every_threads_next_call_and_frees_the_replaced_backend() {
    let first: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let weak: Weak<dyn CacheBackend> = Arc::downgrade(&first);
    cache_memoize::set_shared_backend(first);

    let (to_other, other_hears) = mpsc::channel::<()>();
    let (to_main, main_hears) = mpsc::channel::<u32>();
    let other = thread::spawn(move || {
        // Stored in the first backend, and this thread's handle made on it.
        to_main.send(call(1)).ok();
        other_hears.recv().ok();
        // After the registration: the new backend is empty, so this computes.
        to_main.send(call(2)).ok();
    });
    assert_eq!(main_hears.recv().ok(), Some(1));
    assert_eq!(call(9), 1, "this thread reads the first backend too");

    set_backend(MemoryBackend::new());
    assert_eq!(call(3), 3, "this thread's next call uses the new backend");
    to_other.send(()).ok();
    assert_eq!(
        main_hears.recv().ok(),
        Some(3),
        "the other thread's next call uses the new backend (it finds this thread's value)"
    );
    other.join().ok();
    // No thread's handle keeps it: it goes once the lock renewals' watcher of the
    // first backend idles out (5 s after its last lock).
    wait_until("the replaced backend is dropped", || {
        weak.upgrade().is_none()
    });
}
