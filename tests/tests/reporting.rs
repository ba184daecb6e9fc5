//! A backend failure never breaks the caller, and says so through `tracing`.

use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize::{LockOptions, MemoizeOptions, MemoryBackend, cache_memoize, memoize};
use cache_memoize_tests::Probe;
use cache_memoize_tests::captured::Captured;
use serde::{Deserialize, Serialize};

fn capturing(captured: &Captured) -> impl tracing::Subscriber + use<> {
    captured.subscriber(tracing::Level::WARN)
}

/// Internally tagged: bincode writes it but cannot read it back.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Shape {
    Circle { r: u32 },
}

static SHAPES: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize]
fn shape(r: u32) -> Shape {
    SHAPES.fetch_add(1, Ordering::SeqCst);
    Shape::Circle { r }
}

#[test]
fn a_type_the_codec_cannot_read_back_is_reported_once_with_the_function_and_the_fix() {
    let captured = Captured::default();
    tracing::subscriber::with_default(capturing(&captured), || {
        assert_eq!(shape(1), Shape::Circle { r: 1 });
        assert_eq!(shape(1), Shape::Circle { r: 1 });
        assert_eq!(shape(2), Shape::Circle { r: 2 });
    });
    let log = captured.text();
    assert_eq!(log.matches("WARN").count(), 1, "reported once: {log}");
    assert!(
        log.contains("reporting::shape"),
        "the function is named: {log}"
    );
    assert!(log.contains("reporting::Shape"), "the type is named: {log}");
    assert!(
        log.contains(r#"codec = \"msgpack\""#) || log.contains(r#"codec = "msgpack""#),
        "the fix is named: {log}"
    );
    assert_eq!(
        SHAPES.load(Ordering::SeqCst),
        3,
        "such values are never read back"
    );
}

#[test]
fn a_failing_backend_is_reported_with_the_key_and_the_value_still_returned() {
    let captured = Captured::default();
    let subscriber = capturing(&captured);
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

/// A backend that keeps failing is reported once (WARN), not once per call; its
/// recovery is reported once too (INFO: good news needs no person).
#[test]
fn a_failing_backend_is_reported_once_per_change_of_state() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::INFO);
    let probe = Arc::new(Probe::new(Arc::new(MemoryBackend::new())));
    let opts = MemoizeOptions::new().backend(probe.clone());
    tracing::subscriber::with_default(subscriber, || {
        probe.set_failing(true);
        for i in 0..50_u32 {
            assert_eq!(memoize(&format!("flaky:{i}"), &opts, || i), i);
        }
        probe.set_failing(false);
        assert_eq!(memoize("flaky:ok", &opts, || 1_u8), 1);
        assert_eq!(memoize("flaky:ok", &opts, || 2_u8), 1);
    });
    let log = captured.text();
    assert_eq!(log.matches("computing without it").count(), 1, "{log}");
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("caching resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "{log}");
    assert!(resumed[0].contains("INFO"), "{log}");
}

/// Issue 22: an invalidation that lands during a computation voids its lock; the value
/// is returned, not stored: the right outcome, so said at DEBUG and counted
/// (`Stats::voided`), not at WARN (165–326 WARN lines per 70 s in a real service).
#[test]
fn a_computation_voided_by_an_invalidation_is_no_warning_and_is_counted() {
    let captured = Captured::default();
    let subscriber = capturing(&captured);
    let backend: Arc<dyn cache_memoize::CacheBackend> = Arc::new(MemoryBackend::new());
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend))
        .lock(LockOptions::default());
    let before = cache_memoize::stats().voided;
    let value = tracing::subscriber::with_default(subscriber, || {
        memoize("voided", &opts, || {
            let key = cache_memoize::make_cache_key("voided");
            assert!(backend.invalidate(key.as_str(), &key.lock_key()).is_ok());
            7_u8
        })
    });
    assert_eq!(value, 7, "the computed value is returned");
    let key = cache_memoize::make_cache_key("voided");
    assert!(
        backend.get(key.as_str()).is_ok_and(|found| found.is_none()),
        "and not stored over the invalidation"
    );
    let log = captured.text();
    assert!(!log.contains("WARN"), "no warning: {log}");
    assert!(cache_memoize::stats().voided > before, "counted");
}

/// A computation that outlives its lock (its renewals fail, so the lock expires) is
/// worth a WARN: that one says the lock expired.
#[test]
fn a_lock_that_expired_while_computing_is_a_warning() {
    use cache_memoize::{AsyncBackendCore, Backend, BackendCore, BoxFuture, Error, Op, Reply};

    /// Fails every extension: the lock expires under the computation.
    struct NoRenewal(MemoryBackend);
    impl BackendCore for NoRenewal {
        fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
            if op.name() == "compare_and_extend" {
                return Err(Error::Skipped {
                    address: "test".into(),
                    operation: "compare_and_extend",
                    key: op.key().to_owned(),
                    reason: "renewals fail in this test",
                });
            }
            self.0.execute(op)
        }
    }
    impl AsyncBackendCore for NoRenewal {
        fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
            Box::pin(std::future::ready(self.execute(op)))
        }
    }

    let captured = Captured::default();
    let subscriber = capturing(&captured);
    let backend: Arc<NoRenewal> = Arc::new(NoRenewal(MemoryBackend::new()));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn cache_memoize::CacheBackend>)
        .lock(LockOptions {
            expire: cache_memoize::MIN_LOCK_EXPIRE,
            ..LockOptions::default()
        });
    let key = cache_memoize::make_cache_key("expired");
    let value = tracing::subscriber::with_default(subscriber, || {
        memoize("expired", &opts, || {
            cache_memoize_tests::wait_until("the lock expired", || {
                backend
                    .0
                    .get(&key.lock_key())
                    .is_ok_and(|found| found.is_none())
            });
            7_u8
        })
    });
    assert_eq!(value, 7);
    let log = captured.text();
    assert!(
        log.contains("WARN") && log.contains("the lock expired while computing"),
        "{log}"
    );
    let warnings = log.lines().filter(|line| line.contains("WARN")).count();
    assert_eq!(warnings, 1, "one lost lock, one WARN: {log}");
}

#[cache_memoize(key = "thrash:{n}", shared_key)]
fn thrash_count(n: u32) -> u32 {
    n
}

#[cache_memoize(key = "thrash:{n}", shared_key)]
fn thrash_name(n: u32) -> String {
    format!("n{n}")
}

/// Issue 22 (a new user's trial): two functions under `shared_key` with one template
/// and different types evicted each other for ever, silently. The second one's first
/// call says so at WARN, naming both functions and their types (once); a value of
/// another type where a type is read is said too (once per type), with both likely
/// causes.
#[test]
fn two_shared_key_functions_of_different_types_are_said_not_silent() {
    let captured = Captured::default();
    tracing::subscriber::with_default(capturing(&captured), || {
        assert_eq!(thrash_count(1), 1);
        assert_eq!(thrash_name(1), "n1");
        assert_eq!(thrash_count(1), 1);
        assert_eq!(thrash_name(1), "n1");
    });
    let log = captured.text();
    assert!(
        log.contains("a value of another type was found") && log.contains("shared_key"),
        "{log}"
    );
    assert!(
        log.matches("a value of another type was found").count() <= 2,
        "once per type: {log}"
    );
    let named: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("share the key template"))
        .collect();
    assert_eq!(named.len(), 1, "said once: {log}");
    assert!(
        named[0].contains("WARN")
            && named[0].contains("reporting::thrash_count")
            && named[0].contains("reporting::thrash_name")
            && named[0].contains("`u32`")
            && named[0].contains("String")
            && named[0].contains("thrash:{n}"),
        "both functions, both types, the template: {log}"
    );
}

/// A forced refresh lands or says so: its store failing while the backend's failures
/// are being summarized (another call's failure reported a moment before, as under an
/// outage shared by many threads) is still said, at WARN, for that refresh.
#[test]
fn a_forced_refresh_whose_store_fails_says_so_while_failures_are_summarized() {
    let probe = Arc::new(Probe::new(Arc::new(MemoryBackend::new())));
    let opts =
        MemoizeOptions::new().backend(Arc::clone(&probe) as Arc<dyn cache_memoize::CacheBackend>);
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::WARN));
    // Once the refresh holds the lock, the backend fails, and another call's failure is
    // reported first (starting the summary window).
    let (hooked, other) = (Arc::clone(&probe), opts.clone());
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let arm = Arc::clone(&armed);
    probe.after(move |op| {
        if op == "take_lock" && arm.swap(false, Ordering::SeqCst) {
            hooked.set_failing(true);
            let _: u32 = memoize("reporting:other", &other, || 1);
        }
    });
    let value: u32 = cache_memoize::refresh(|| memoize("reporting:forced", &opts, || 2));
    assert_eq!(value, 2);
    assert!(!armed.load(Ordering::SeqCst), "the refresh took the lock");
    let text = captured.text();
    assert!(
        text.contains("computing without it"),
        "the other call's failure: {text}"
    );
    assert!(
        text.contains("a forced refresh's store failed"),
        "the refresh said its store failed: {text}"
    );
}
