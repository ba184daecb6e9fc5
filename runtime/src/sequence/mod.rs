//! One memoized call's sequence: fetch → (miss) lock-or-read → compute →
//! store-and-release, decided once by a sans-IO [`Machine`] and run by a blocking or an
//! async [`Driver`]. The value path (`memoize`) and the iterator path (`iter`) both run
//! it; new behaviour belongs in the machine, so that sync and async cannot drift apart.

mod driver;
mod machine;
#[cfg(test)]
mod tests;

pub(crate) use driver::{Driver, Lookup, Trigger};
pub(crate) use machine::{
    DecodeFn, Decoder, FreshPolicy, LockPolicy, Machine, Note, Policy, Storing, servable,
};
