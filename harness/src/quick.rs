//! Quick mode: every example runs in seconds when `CACHE_MEMOIZE_QUICK=1`, with smaller
//! sizes than its measuring defaults (its flags still override them). `.ci/examples`
//! runs each `[[example]]` this way and checks that the last line it prints is a result
//! line: space-separated `name=value` pairs.

/// The environment variable that selects quick mode (`1`).
pub const QUICK_ENV: &str = "CACHE_MEMOIZE_QUICK";

/// Whether this process runs in quick mode (`CACHE_MEMOIZE_QUICK=1`). The worker
/// processes an example starts inherit the variable, and with it the mode.
#[must_use]
pub fn quick() -> bool {
    std::env::var_os(QUICK_ENV).is_some_and(|v| v == "1")
}

/// `quick` in quick mode, `full` otherwise: an example's default size.
pub fn sized<T>(full: T, quick: T) -> T {
    if self::quick() { quick } else { full }
}
