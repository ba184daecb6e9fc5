//! One memoized call's sequence: fetch → (miss) lock-or-read → compute →
//! store-and-release, decided once by a sans-IO [`Machine`](machine::Machine) and run by a blocking or an
//! async [`Driver`]. The value path (`memoize`) and the iterator path (`iter`) both run
//! it; new behaviour belongs in the machine, so that sync and async cannot drift apart.
//!
//! Imports go one way: `call.rs` (one call's key, options, backend, encoding and
//! reports) builds the machine; `driver.rs` uses both; `machine.rs` imports neither,
//! and nothing here imports the entries above (`memoize`, `iter`, `refresh`).

mod call;
mod driver;
mod machine;
#[cfg(test)]
mod tests;

pub(crate) use call::Call;
pub(crate) use driver::{
    Defer, Deferred, Driver, Lookup, Progress, Trigger, send_many, send_many_async,
};
pub(crate) use machine::{Machine, Storing, servable};
