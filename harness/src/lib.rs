//! The measurement harnesses and the consistency checker of cache-memoize, as
//! `[[example]]` targets (`cargo run --release --example consistency` from the
//! workspace root). Their code of their own: [`quick`], the quick mode every example
//! has (`CACHE_MEMOIZE_QUICK=1`, what CI runs); [`probe`], what the harnesses read a
//! process and a private `redis-server` with.

pub mod probe;
pub mod quick;
