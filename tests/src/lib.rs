//! The behaviour suite of cache-memoize, written once and run against every backend
//! with [`backend_suite!`]: each scenario is a function taking a [`Fixture`].

// Every scenario panics when the behaviour it proves is broken: that is what it is for.
#![allow(clippy::missing_panics_doc)]

pub mod batch_suite;
pub mod captured;
pub mod freshness_suite;
pub mod identity_suite;
pub mod iter_suite;
pub mod keep_decoded_suite;
pub mod keys_suite;
pub mod large_suite;
pub mod lock_suite;
pub mod memoize_suite;
pub mod near;
pub mod order_suite;
pub mod probe;
pub mod proxy;
pub mod receivers;
pub mod server;
pub mod tags_suite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, LockOptions, MemoizeOptions, make_cache_key};

pub use probe::Probe;

/// One scenario's backend (behind a [`Probe`]) and its unique keys.
pub struct Fixture {
    /// The backend under test, wrapped.
    pub probe: Arc<Probe>,
    id: String,
    /// What must live as long as the backend (a private server).
    keep: Option<Box<dyn std::any::Any>>,
    /// Another client of the same store ("another process"), if the row has one.
    other: Option<Arc<dyn CacheBackend>>,
}

impl Fixture {
    /// A fixture over a fresh in-process [`MemoryBackend`](cache_memoize::MemoryBackend).
    pub fn memory() -> Self {
        Self::new(Arc::new(cache_memoize::MemoryBackend::new()))
    }

    /// A fixture over `backend`.
    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        Self {
            probe: Arc::new(Probe::new(backend)),
            id: uuid::Uuid::new_v4().simple().to_string(),
            keep: None,
            other: None,
        }
    }

    /// Gives the fixture another client of the same store, for writes made by
    /// "another process" (which a near cache learns of only through its invalidation
    /// link).
    #[must_use]
    pub fn with_other_client(mut self, other: Arc<dyn CacheBackend>) -> Self {
        self.other = Some(other);
        self
    }

    /// Another client of the fixture's store: the one given to
    /// [`with_other_client`](Self::with_other_client), or else the backend behind the
    /// probe.
    pub fn other_client(&self) -> Arc<dyn CacheBackend> {
        self.other
            .clone()
            .unwrap_or_else(|| Arc::clone(self.probe.inner()))
    }

    /// Keeps `guard` (such as the server behind the backend) alive with the fixture.
    #[must_use]
    pub fn keeping(mut self, guard: impl std::any::Any) -> Self {
        self.keep = Some(Box::new(guard));
        self
    }

    /// The probe as a backend handle.
    pub fn backend(&self) -> Arc<dyn CacheBackend> {
        self.probe.clone()
    }

    /// A key no other scenario or run uses.
    pub fn key(&self, name: &str) -> String {
        format!("{name}:{}", self.id)
    }

    /// Options on this fixture's backend, without a lock.
    pub fn opts(&self) -> MemoizeOptions {
        MemoizeOptions::new().backend(self.backend())
    }

    /// Options on this fixture's backend, with a lock that retries often (a missed
    /// wake-up costs little) and waits without limit.
    pub fn locked(&self) -> MemoizeOptions {
        self.opts().lock(fast_lock())
    }

    /// The raw bytes stored at memoize key `key`, read behind the probe's back.
    pub fn stored(&self, key: &str) -> Option<Vec<u8>> {
        self.probe
            .inner()
            .get(make_cache_key(key).as_str())
            .ok()
            .flatten()
    }

    /// The token in the lock of memoize key `key`, read behind the probe's back.
    pub fn lock_token(&self, key: &str) -> Option<Vec<u8>> {
        self.probe
            .inner()
            .get(&make_cache_key(key).lock_key())
            .ok()
            .flatten()
    }
}

/// Lock options for tests: retry every 10 ms, no timeout.
pub fn fast_lock() -> LockOptions {
    LockOptions {
        retry: Duration::from_millis(10),
        ..LockOptions::default()
    }
}

/// Waits until `condition` holds, for an event only time brings (an expiry).
///
/// # Panics
/// If it does not hold within 10 seconds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Holds the process-wide backend registry for one scenario: the tests of one binary
/// run in parallel, and a scenario that registers a backend and then relies on it
/// (`invalidate`, say) must not see another test's registration come in between.
pub fn registry_guard() -> std::sync::MutexGuard<'static, ()> {
    static REGISTRY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A multi-threaded Tokio runtime for the async scenarios.
///
/// # Panics
/// If the runtime cannot start.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot start a Tokio runtime: {err}"),
    }
}

/// A single-threaded Tokio runtime with its drivers, for scenarios whose
/// interleaving must be exact (see [`settle`]).
///
/// # Panics
/// If the runtime cannot start.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot start a runtime: {err}"),
    }
}

/// Lets every other task of a current-thread runtime run until it is pending.
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Calls `$callback!` with the suite's scenarios, as `module: [scenario, ...]; ...`.
#[macro_export]
macro_rules! with_scenarios {
    ($callback:ident! ($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            lock_suite: [
                acquire_new_lock, held_lock_non_blocking_would_block, try_acquire_never_waits,
                held_lock_blocking_waits_for_release, held_lock_times_out_naming_the_key,
                release_deletes_the_lock, release_after_token_replaced_keeps_the_other_token,
                release_after_expiry_returns_false, extend_keeps_the_lock,
                extend_after_lock_lost_leaves_the_new_owner_alone, dropped_guard_releases,
                guard_released_during_panic, acquire_async_waits_for_release,
                acquire_async_non_blocking_would_block,
                fencing_tokens_increase_with_every_acquisition,
                a_lost_lock_is_reported_by_its_guard
            ];
            memoize_suite: [
                value_present_no_lock_no_compute, miss_computes_while_holding_the_lock,
                value_appearing_while_acquiring_is_not_recomputed,
                waiter_reads_the_other_holders_result, lock_timeout_computes_anyway,
                lock_timeout_with_value_present_returns_it, previous_lock_expired_is_taken_over,
                sixteen_threads_on_a_cold_key_compute_once, panic_in_compute_leaves_no_lock,
                corrupt_bytes_are_recomputed_and_overwritten, expired_entry_is_a_miss,
                broken_backend_computes_and_returns, err_is_returned_and_not_stored,
                force_overwrite_recomputes_and_stores, version_change_is_a_miss,
                unlocked_miss_computes_and_stores, invalidate_removes_the_value,
                async_hit_and_miss, async_tasks_on_a_cold_key_compute_once,
                async_broken_backend_computes_and_returns, async_err_is_not_stored,
                refresh_recomputes_the_first_call_only, refresh_async_recomputes,
                long_computation_keeps_its_lock, two_backends_do_not_share_a_computation,
                async_cancelled_leader_strands_no_one, async_leader_panic_lets_followers_retry,
                async_cancelled_at_random_points_leaves_no_lock,
                a_late_holder_does_not_overwrite_the_newer_value,
                invalidate_during_a_computation_voids_its_store,
                async_invalidate_during_a_computation_voids_its_store,
                expire_duration_max_still_caches, zero_lock_expire_does_not_spin_the_renewal,
                a_waiter_riding_out_a_failing_backend_retries_at_the_locks_pace,
                a_panicking_refresh_async_forces_nothing_after
            ];
            freshness_suite: [
                stale_value_is_served_while_one_caller_refreshes,
                nothing_older_than_expire_plus_stale_is_served,
                an_inline_refresh_returns_the_new_value,
                a_failing_refresh_keeps_the_stale_value_and_is_throttled,
                a_panicking_refresh_keeps_the_stale_value,
                a_detached_refresh_returns_the_stale_value_at_once,
                an_async_detached_refresh_returns_the_stale_value_at_once,
                a_stale_read_that_reaches_the_refresh_lock_after_another_process_refreshed_does_not_recompute,
                stale_hits_in_one_process_start_one_detached_refresh,
                stale_hits_on_one_runtime_start_one_refresh_task,
                a_process_that_found_the_refresh_lock_held_backs_off,
                an_early_refresh_drawn_in_two_processes_computes_once,
                jitter_spreads_expiries, readers_with_skewed_clocks,
                the_largest_durations_still_cache
            ];
            order_suite: [
                a_stale_refresh_never_lands_over_a_later_forced_refresh,
                a_miss_during_a_refresh_is_ordered_after_it,
                a_forced_refresh_without_lock_waits_and_lands,
                a_call_after_an_invalidation_never_joins_an_older_flight,
                a_none_refresh_replaces_the_stale_some,
                a_detached_none_refresh_replaces_the_stale_some,
                a_refresh_that_fails_past_the_window_returns_its_error,
                a_refresh_that_panics_past_the_window_panics,
                a_value_found_after_a_long_wait_is_judged_when_found
            ];
            iter_suite: [
                iter_zero_items, iter_one_item, iter_exactly_one_chunk, iter_one_over_a_chunk,
                iter_many_chunks, iter_streams_and_commits_last, iter_early_drop_commits_nothing,
                iter_missing_chunk_is_recomputed, iter_corrupt_chunk_is_recomputed,
                iter_backend_failure_mid_stream, iter_concurrent_first_callers_compute_once,
                iter_async_miss_and_hit, iter_async_missing_chunk_is_recomputed,
                iter_compressed_round_trip, iter_reads_whatever_compression_it_was_written_with,
                iter_foreign_chunk_is_recomputed, iter_async_foreign_chunk_is_recomputed,
                iter_abandoned_refresh_leaves_the_committed_sequence,
                iter_reader_during_a_refresh_never_sees_a_mix,
                iter_slow_reader_of_unchanged_data_gets_the_whole_sequence,
                iter_slow_reader_of_replaced_data_never_mixes_two_writes,
                iter_is_fresh_until_it_expires_whatever_the_clock
            ];
            keep_decoded_suite: [
                kept_hits_return_the_value_computed_once,
                writes_and_invalidations_elsewhere_replace_the_kept_value,
                a_change_between_the_bytes_and_the_kept_value_is_never_served_after,
                two_builds_of_one_key_keep_their_own_values,
                a_kept_value_is_judged_by_the_callers_clock,
                none_and_errors_are_never_kept,
                a_panicking_clone_leaves_the_right_value_served,
                own_refreshes_and_invalidations_are_read_back
            ];
            large_suite: [
                large_value_round_trips_in_chunks, values_up_to_the_threshold_are_stored_whole,
                a_missing_or_damaged_chunk_is_recomputed,
                sixteen_callers_on_a_cold_large_key_compute_once,
                an_invalidated_large_value_is_recomputed,
                a_stale_large_value_is_served_whole_and_refreshed, async_large_miss_and_hit
            ];
            batch_suite: [
                a_cold_batch_loads_once_and_an_all_hit_batch_is_one_read,
                a_partly_warm_batch_loads_only_the_missing,
                an_element_the_loader_does_not_return_is_a_stored_absence,
                an_invalidated_element_is_loaded_again_alone,
                overlapping_batches_in_threads_load_each_key_once,
                a_forced_batch_reloads_every_element, async_batch_miss_and_hit,
                a_batch_of_large_elements_round_trips,
                stale_elements_are_refreshed_in_the_one_loader_call,
                locks_held_while_a_batch_waits_are_kept_alive
            ];
            tags_suite: [
                a_tagged_value_is_a_hit_until_one_of_its_tags_is_invalidated,
                a_tagged_hit_is_one_read,
                a_value_computed_before_invalidate_tag_is_not_served_after_it,
                a_moved_tag_is_a_miss_even_within_stale, a_lost_epoch_is_a_miss,
                a_forced_refresh_stores_under_the_current_epochs, async_tags,
                a_tagged_batch_is_invalidated_by_its_tag,
                a_tagged_sequence_is_computed_again_after_its_tag_moves,
                a_sequence_begun_before_invalidate_tag_is_not_served_after_it,
                async_tagged_sequence
            ]
        );
    };
}

/// Defines one `#[test]` per scenario of the suite, each on a [`Fixture`] made by
/// `$fixture` (evaluated once per test).
#[macro_export]
macro_rules! backend_suite {
    ($fixture:expr) => {
        $crate::with_scenarios!(backend_suite_tests!($fixture));
    };
}

/// Defines one `#[test]` named `$name` that runs every scenario in turn, each on a
/// [`Fixture`] made by `$fixture` (for an expensive shared setup, such as a cluster).
#[macro_export]
macro_rules! sequential_backend_suite {
    ($name:ident, $setup:expr, |$shared:ident| $fixture:expr) => {
        #[test]
        fn $name() {
            let $shared = $setup;
            $crate::with_scenarios!(backend_suite_sequence!($fixture));
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! backend_suite_tests {
    ($fixture:expr; $($suite:ident : [$($scenario:ident),* $(,)?]);* $(;)?) => {
        $($(
            #[test]
            fn $scenario() {
                $crate::$suite::$scenario(&$fixture);
            }
        )*)*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! backend_suite_sequence {
    ($fixture:expr; $($suite:ident : [$($scenario:ident),* $(,)?]);* $(;)?) => {
        $($(
            eprintln!("scenario {}", stringify!($scenario));
            $crate::$suite::$scenario(&$fixture);
        )*)*
    };
}
