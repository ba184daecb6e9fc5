use std::sync::Arc;

use cache_memoize::{Clock, cache_memoize};

#[cache_memoize(stale = "1h")]
fn stale_rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

#[cache_memoize(beta = 1.0, jitter = "10%")]
fn early_rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn clock() -> Arc<dyn Clock> {
    unimplemented!()
}

#[cache_memoize(clock = clock)]
async fn clocked_rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
