//! A backend failure never breaks the caller, and says so through `tracing`.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use cache_memoize::{LockOptions, MemoizeOptions, MemoryBackend, memoize};
use cache_memoize_tests::Probe;

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

#[test]
fn a_failing_backend_is_reported_with_the_key_and_the_value_still_returned() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let probe = Arc::new(Probe::new(Arc::new(MemoryBackend::new())));
    probe.set_failing(true);
    let opts = MemoizeOptions::new()
        .backend(probe)
        .lock(LockOptions::default());
    let value =
        tracing::subscriber::with_default(subscriber, || memoize("reported", &opts, || 7_u8));
    assert_eq!(value, 7);
    let log = captured.text();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("computing without it"), "{log}");
    assert!(log.contains("{reported}"), "the key is named: {log}");
    assert!(
        log.contains("the probe is set to fail"),
        "the cause is named: {log}"
    );
}
