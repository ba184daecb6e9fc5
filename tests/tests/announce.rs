//! The first memoized call of a process says which backend it uses and whether its
//! values are shared (issue 22: a forgotten `set_backend` used to cache per process
//! with no word at any level). One test: the announcement is once per process; and a
//! function with `stale` but no `expire` says so once (a stale window that opens only
//! after the default 30 days is seldom what was meant).

use cache_memoize::cache_memoize;
use cache_memoize_tests::captured::Captured;

#[cache_memoize]
fn answer(n: u32) -> u32 {
    n + 41
}

#[cache_memoize(stale = "1h")]
fn stale_only(n: u32) -> u32 {
    n + 1
}

#[cache_memoize(expire = "5m", stale = "1h")]
fn stale_and_expire(n: u32) -> u32 {
    n + 2
}

#[test]
fn the_first_call_names_the_backend_once_and_says_values_stay_in_the_process() {
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::INFO);
    if let Err(err) = tracing::subscriber::set_global_default(subscriber) {
        panic!("cannot install the subscriber: {err}");
    }
    cache_memoize::set_key_prefix("shop");
    assert!(
        captured
            .take()
            .contains("cache key prefix set prefix=\"shop\""),
        "a prefix set is said"
    );
    assert_eq!(answer(1), 42);
    assert_eq!(answer(1), 42);
    assert_eq!(answer(2), 43);
    let log = captured.take();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("memoized values are"))
        .collect();
    assert_eq!(lines.len(), 1, "announced once: {log}");
    assert!(lines[0].contains("INFO"), "{log}");
    assert!(
        lines[0].contains("MemoryBackend"),
        "the backend is named: {log}"
    );
    assert!(
        lines[0].contains("prefix=\"shop\""),
        "the key prefix is named: {log}"
    );
    assert!(
        lines[0].contains("not shared with other processes") && lines[0].contains("set_backend"),
        "what it means and the fix: {log}"
    );
    cache_memoize::set_backend(cache_memoize::MemoryBackend::new());
    assert_eq!(answer(3), 44);
    assert!(
        !captured.take().contains("memoized values are"),
        "once per process"
    );

    assert_eq!(stale_only(1), 2);
    assert_eq!(stale_only(2), 3);
    assert_eq!(stale_and_expire(1), 3);
    let log = captured.take();
    let noted: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("without `expire`"))
        .collect();
    assert_eq!(noted.len(), 1, "said once, for stale_only only: {log}");
    assert!(
        noted[0].contains("WARN") && noted[0].contains("stale_only"),
        "{log}"
    );
    assert!(noted[0].contains("expire = \"5m\""), "with the fix: {log}");
}
