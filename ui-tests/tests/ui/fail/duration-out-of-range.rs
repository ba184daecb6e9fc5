use cache_memoize::cache_memoize;

#[cache_memoize(expire = "0s")]
fn zero_expire() -> u32 { 1 }

#[cache_memoize(expire = "36501d")]
fn expire_over_100_years() -> u32 { 1 }

#[cache_memoize(lock(expire = "0ms"))]
fn zero_lock_expire() -> u32 { 1 }

#[cache_memoize(lock(expire = "50ms"))]
fn lock_expire_under_100ms() -> u32 { 1 }

#[cache_memoize(lock(expire = "99999999h"))]
fn absurd_lock_expire() -> u32 { 1 }

#[cache_memoize(lock(timeout = "0s"))]
fn zero_timeout() -> u32 { 1 }

#[cache_memoize(lock(timeout = "40000d"))]
fn absurd_timeout() -> u32 { 1 }

#[cache_memoize(lock(retry = "0ms"))]
fn zero_retry() -> u32 { 1 }

#[cache_memoize(lock(retry = "876001h"))]
fn absurd_retry() -> u32 { 1 }

fn main() {}
