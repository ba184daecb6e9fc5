//! Registering the process's backend: `set_backend` says what it registered and what it
//! replaced; `try_set_backend` never replaces one. One scenario, in order, because the
//! registry is global to this test binary.

use cache_memoize::{MemoizeOptions, MemoryBackend, memoize, set_backend, try_set_backend};
use cache_memoize_tests::captured::Captured;

#[test]
fn registrations_are_logged_and_try_set_backend_never_replaces() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::INFO);
    tracing::subscriber::with_default(subscriber, || {
        // Only the default is in place: the first try registers.
        assert!(try_set_backend(MemoryBackend::new()));
        let log = captured.take();
        assert!(log.contains("cache backend registered"), "{log}");
        assert!(
            log.contains("registered=\"cache_memoize::backend::memory::MemoryBackend\""),
            "{log}"
        );
        assert!(
            log.contains("the default in-process MemoryBackend"),
            "{log}"
        );

        assert_eq!(memoize("registry", &MemoizeOptions::new(), || 1_u8), 1);
        assert!(!try_set_backend(MemoryBackend::new()));
        let log = captured.take();
        assert!(log.contains("not registered"), "{log}");
        // Refused: the value computed on the registered backend is still there.
        assert_eq!(memoize("registry", &MemoizeOptions::new(), || 2_u8), 1);

        set_backend(MemoryBackend::new());
        let log = captured.take();
        assert!(log.contains("cache backend registered"), "{log}");
        assert!(
            log.contains("replaced=\"cache_memoize::backend::memory::MemoryBackend\""),
            "{log}"
        );
        assert_eq!(memoize("registry", &MemoizeOptions::new(), || 3_u8), 3);
    });
}
