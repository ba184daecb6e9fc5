//! [`refresh`] and [`refresh_async`]: force the first memoized call in a scope to
//! compute and overwrite, whatever form the memoized function has (free function,
//! method, associated function) and without building its key by hand.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static FORCE_NEXT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `call`; the first memoized call it makes skips the stored value, computes,
/// and stores the result (as with `force_overwrite`, which says how it waits for a held
/// lock and what it logs when it cannot store). Memoized calls nested inside that one
/// are not forced.
///
/// ```
/// use cache_memoize::{MemoizeOptions, memoize, refresh};
///
/// fn rate(currency: &str) -> u32 {
///     memoize(&format!("rate:{currency}"), &MemoizeOptions::new(), || 100)
/// }
/// assert_eq!(rate("eur"), 100);
/// assert_eq!(refresh(|| rate("eur")), 100); // recomputed and stored anew
/// ```
pub fn refresh<R>(call: impl FnOnce() -> R) -> R {
    let _armed = Armed::new();
    call()
}

/// The async form of [`refresh`]: the first memoized call made by `call` is forced.
pub async fn refresh_async<F: Future>(call: F) -> F::Output {
    Forced {
        inner: Box::pin(call),
        armed: true,
    }
    .await
}

/// Consumes the flag: true once after [`refresh`] armed it.
pub(crate) fn take_forced() -> bool {
    FORCE_NEXT.with(|force| force.replace(false))
}

/// Sets the flag for a scope, and clears it afterwards if nothing consumed it.
struct Armed;

impl Armed {
    fn new() -> Self {
        FORCE_NEXT.with(|force| force.set(true));
        Self
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        FORCE_NEXT.with(|force| force.set(false));
    }
}

/// Arms the flag around each poll of `inner` until a memoized call consumes it, so it
/// works whichever thread polls.
struct Forced<F> {
    inner: Pin<Box<F>>,
    armed: bool,
}

impl<F: Future> Future for Forced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.armed {
            return self.inner.as_mut().poll(cx);
        }
        // Cleared after the poll even if it panics (`Armed`'s drop): a flag left set
        // would force the thread's next memoized call, whatever it is.
        let armed = Armed::new();
        let polled = self.inner.as_mut().poll(cx);
        // Still set: nothing consumed it in this poll; try again next poll.
        self.armed = FORCE_NEXT.with(Cell::get);
        drop(armed);
        polled
    }
}
