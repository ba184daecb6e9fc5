//! The examples are `[[example]]` targets. The one piece of code of its own is
//! [`service`]: the example HTTP service's router, kept here so that its test
//! (`tests/service.rs`) drives the same code that `examples/service.rs` serves.

pub mod service;
