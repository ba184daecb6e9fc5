//! The examples are `[[example]]` targets. Their code of their own: [`service`], the
//! example HTTP service's router, kept here so that its test (`tests/service.rs`) drives
//! the same code that `examples/service.rs` serves; and [`quick`], the quick mode every
//! example has (`CACHE_MEMOIZE_QUICK=1`, what CI runs).

pub mod quick;
pub mod service;
