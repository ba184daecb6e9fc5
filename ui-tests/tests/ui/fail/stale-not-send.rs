use std::rc::Rc;

use cache_memoize::cache_memoize;

// With `stale` (or `beta`) and owned arguments, a stale value is refreshed on a thread
// that owns them: each must be `Send + 'static`; the error suggests `refresh = "inline"`.
#[cache_memoize(stale = "5m")]
fn shared(counter: Rc<u32>) -> u32 {
    *counter
}

#[cache_memoize(beta = 1.0, skip(handle))]
fn skipped(n: u32, handle: Rc<()>) -> u32 {
    n
}

#[cache_memoize(stale = "5m")]
fn generic<T: std::fmt::Display>(value: T) -> String {
    value.to_string()
}

#[derive(Clone)]
struct Session(Rc<u32>);

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Session {
    #[cache_memoize(stale = "5m")]
    fn closing(self) -> u32 {
        *self.0
    }
}

// An `async fn`'s refresh is a task: its future must be `Send` too.
#[cache_memoize(stale = "5m")]
async fn held_across_await(n: u32) -> u32 {
    let local = Rc::new(n);
    std::future::ready(()).await;
    *local
}

fn main() {}
