//! A blocking call of the cache that holds a thread inside a Tokio runtime (a blocking
//! invalidation from a handler) is said at WARN (at most once a minute), with the async form to use.

use std::time::Duration;

use cache_memoize::{BackendCore, Error, ImmediateBackend, MemoryBackend, Op, Reply};
use cache_memoize_tests::captured::Captured;

/// Takes 150 ms over each invalidation of a key naming "slow", as a frozen server would
/// take its timeout.
struct SlowInvalidation(MemoryBackend);

impl BackendCore for SlowInvalidation {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        if op.name() == "invalidate" && op.key().contains("slow") {
            std::thread::sleep(Duration::from_millis(150));
        }
        self.0.execute(op)
    }
}

impl ImmediateBackend for SlowInvalidation {}

fn warnings(captured: &Captured, run: impl FnOnce()) -> String {
    let subscriber = captured.subscriber(tracing::Level::WARN);
    tracing::subscriber::with_default(subscriber, run);
    captured.text()
}

// One test: what is said is said at most once a minute per process.
#[test]
fn a_slow_blocking_invalidation_inside_a_runtime_is_said_once_with_the_async_form()
-> Result<(), Box<dyn std::error::Error>> {
    cache_memoize::set_backend(SlowInvalidation(MemoryBackend::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Outside a runtime a blocking call blocks no one else; inside one, a quick one
    // holds its thread no longer than any await point would: nothing said.
    let mut done = Vec::new();
    let quiet = warnings(&Captured::default(), || {
        done.push(cache_memoize::invalidate("slow:1"));
        done.push(runtime.block_on(async { cache_memoize::invalidate("quick:1") }));
    });
    assert!(
        !quiet.contains("WARN"),
        "said for a quick call or outside a runtime: {quiet}"
    );

    let captured = Captured::default();
    let inside = warnings(&captured, || {
        runtime.block_on(async {
            done.push(cache_memoize::invalidate("slow:2"));
            done.push(cache_memoize::invalidate("slow:3"));
        });
    });
    assert_eq!(
        inside.matches("WARN").count(),
        1,
        "said once within the minute: {inside}"
    );
    assert!(
        inside.contains("invalidate_async") && inside.contains("spawn_blocking"),
        "the fix is named: {inside}"
    );
    for invalidated in done {
        invalidated?;
    }
    Ok(())
}
