//! The Redis backend (built in a later step).
