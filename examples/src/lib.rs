//! The teaching examples of cache-memoize are `[[example]]` targets of this package
//! (`cargo run --example quickstart`); this library is empty. The package depends on
//! `cache-memoize` alone, so a fresh clone builds an example in seconds.
//!
//! Elsewhere: the example HTTP service, an axum service to copy, is a package of its
//! own (`examples/service/`: its dependencies are its own); the measurement harnesses
//! and the consistency checker are the `harness/` package.
