//! The examples are `[[example]]` targets; this crate has no code of its own.
