//! An async caller cancelled at any point leaves no lock behind: cancelled while it
//! computes under the lock, on a runtime that then shuts down, or while its
//! store-and-release is still in flight.

use std::sync::{Arc, Mutex};

use cache_memoize::{MemoryBackend, Op, Reply, memoize_async};
use cache_memoize_tests::{Fixture, current_thread_runtime, settle};

#[test]
fn a_cancelled_async_holder_releases_its_lock_even_if_the_runtime_stops() {
    let f = Fixture::memory();
    let key = f.key("cancelled-then-shutdown");
    let opts = f.locked();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        panic!("cannot start a runtime");
    };
    rt.block_on(async {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let call = memoize_async(&key, &opts, || async move {
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            0_u8
        });
        tokio::select! {
            _ = call => panic!("the computation never finishes"),
            _ = started_rx => {} // computing, under the lock: cancel it
        }
    });
    drop(rt);
    assert_eq!(
        f.lock_token(&key),
        None,
        "the cancelled holder's lock is left behind until it expires"
    );
}

/// A memory store whose async store-and-release never completes (as a request still
/// waiting for its connection), after signalling that it was entered.
struct StalledStore {
    inner: MemoryBackend,
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl cache_memoize::BackendCore for StalledStore {
    fn execute(&self, op: Op<'_>) -> Result<Reply, cache_memoize::Error> {
        self.inner.execute(op)
    }
}

impl cache_memoize::AsyncBackendCore for StalledStore {
    fn execute_async<'a>(
        &'a self,
        op: Op<'a>,
    ) -> cache_memoize::BoxFuture<'a, Result<Reply, cache_memoize::Error>> {
        if !matches!(op, Op::StoreAndRelease { .. }) {
            return self.inner.execute_async(op);
        }
        Box::pin(async move {
            let entered = self
                .entered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(entered) = entered {
                let _ = entered.send(());
            }
            std::future::pending().await
        })
    }
}

#[test]
fn an_async_caller_cancelled_during_store_and_release_leaves_no_lock() {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let f = Fixture::new(Arc::new(StalledStore {
        inner: MemoryBackend::new(),
        entered: Mutex::new(Some(entered_tx)),
    }));
    let key = f.key("cancelled-while-storing");
    let opts = f.locked();
    let rt = current_thread_runtime();
    rt.block_on(async {
        let call = memoize_async(&key, &opts, || async { 1_u8 });
        tokio::select! {
            _ = call => panic!("the store never completes"),
            _ = entered_rx => {} // storing: cancel the caller now
        }
        settle().await; // a release spawned by a dropped guard runs here
    });
    assert_eq!(
        f.lock_token(&key),
        None,
        "the cancelled caller's lock is left behind until it expires (30 s)"
    );
}
