//! The circuit breaker of one [`RedisBackend`](crate::RedisBackend): after
//! consecutive connection failures or timeouts, calls skip the server (the caller
//! computes at once) until a half-open probe, sent after a jittered back-off, gets an
//! answer. The probe is the backend's own `PING` on a thread of its own, not a
//! caller's request: no caller waits out a timeout while the breaker is open.
//!
//! It lives inside the Redis backend rather than around any backend because only the
//! backend can tell a dead or hung server (I/O errors, timeouts) from a server that
//! answered with an error, and because the sync pool and the async connection must
//! share one view of the server's health.
//!
//! The state machine takes the time as an argument; [`Breaker`] reads it from an
//! injectable [`Clock`], so tests open, skip, probe and close it without sleeping.
//!
//! Reporting is per state change, not per call: one WARN when it opens (with the last
//! error), one INFO when it closes (with the number of calls skipped), and while it
//! stays open a WARN summary at most every [`SUMMARY_EVERY`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where a breaker reads the time: `Instant::now` in production, a hand-driven clock in
/// tests.
pub(crate) type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The back-off before the first probe, doubled after each failed probe.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off between probes: the links' cap.
pub(crate) use super::MAX_BACKOFF;
/// How often an open breaker repeats its WARN, with what it skipped meanwhile.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// The default number of consecutive failures that opens the breaker.
pub(crate) const DEFAULT_THRESHOLD: u32 = 3;

/// What [`State::admit`] decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: send the call.
    Call,
    /// The back-off is over: send this call as the one probe.
    Probe,
    /// Open, or a probe is in flight: skip the server.
    Skip,
}

/// A state change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The breaker opened after `failures` consecutive failures.
    Opened { failures: u32, backoff: Duration },
    /// A probe failed; still open.
    ProbeFailed { backoff: Duration },
    /// The server answered; calls go to it again.
    Closed { skipped: u64, open_for: Duration },
    /// Still open: the periodic summary.
    StillOpen { skipped: u64, open_for: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed {
        failures: u32,
    },
    Open {
        probe_at: Instant,
        backoff: Duration,
    },
    Probing {
        backoff: Duration,
    },
}

/// The breaker's state, without a clock or a lock: every method takes `now`.
#[derive(Debug)]
pub(crate) struct State {
    threshold: u32,
    phase: Phase,
    /// When it opened (kept across failed probes), for the reports.
    opened_at: Option<Instant>,
    /// Calls skipped since it opened, and since the last summary.
    skipped: u64,
    skipped_since_summary: u64,
    last_summary: Option<Instant>,
    rng: fastrand::Rng,
}

impl State {
    /// A closed breaker that opens after `threshold` consecutive failures (0: never).
    pub(crate) fn new(threshold: u32, rng: fastrand::Rng) -> Self {
        Self {
            threshold,
            phase: Phase::Closed { failures: 0 },
            opened_at: None,
            skipped: 0,
            skipped_since_summary: 0,
            last_summary: None,
            rng,
        }
    }

    /// Whether a call starting at `now` goes to the server, and the summary to log if
    /// one is due.
    pub(crate) fn admit(&mut self, now: Instant) -> (Admit, Option<Change>) {
        match self.phase {
            Phase::Closed { .. } => (Admit::Call, None),
            // The caller that finds the probe due skips the server too: the probe
            // goes on its own.
            Phase::Open { probe_at, backoff } if now >= probe_at => {
                self.phase = Phase::Probing { backoff };
                self.skipped += 1;
                self.skipped_since_summary += 1;
                (Admit::Probe, None)
            }
            Phase::Open { .. } | Phase::Probing { .. } => {
                self.skipped += 1;
                self.skipped_since_summary += 1;
                (Admit::Skip, self.summary(now))
            }
        }
    }

    /// Records the outcome of an admitted call: `failed` when the server did not answer
    /// (I/O error, timeout, refused connection).
    pub(crate) fn record(&mut self, admitted: Admit, failed: bool, now: Instant) -> Option<Change> {
        match (self.phase, failed) {
            (Phase::Closed { .. }, false) => {
                self.phase = Phase::Closed { failures: 0 };
                None
            }
            (Phase::Closed { failures }, true) => {
                let failures = failures + 1;
                if self.threshold == 0 || failures < self.threshold {
                    self.phase = Phase::Closed { failures };
                    return None;
                }
                let backoff = self.jittered(FIRST_BACKOFF);
                self.open(now, backoff);
                self.opened_at = Some(now);
                self.last_summary = Some(now);
                Some(Change::Opened { failures, backoff })
            }
            // Any answer closes it, a probe's or a call's sent before it opened.
            (Phase::Open { .. } | Phase::Probing { .. }, false) => {
                let change = Change::Closed {
                    skipped: self.skipped,
                    open_for: self
                        .opened_at
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                };
                self.phase = Phase::Closed { failures: 0 };
                self.opened_at = None;
                self.skipped = 0;
                self.skipped_since_summary = 0;
                Some(change)
            }
            (Phase::Probing { backoff }, true) if admitted == Admit::Probe => {
                let backoff = self.jittered(backoff.saturating_mul(2));
                self.open(now, backoff);
                Some(Change::ProbeFailed { backoff })
            }
            // A call sent before it opened failed late: already counted as open.
            (Phase::Open { .. } | Phase::Probing { .. }, true) => None,
        }
    }

    /// The probe was abandoned (its future dropped) before an outcome: the next call
    /// probes instead of the breaker staying half-open for ever.
    pub(crate) fn abandon_probe(&mut self, now: Instant) {
        if let Phase::Probing { backoff } = self.phase {
            self.phase = Phase::Open {
                probe_at: now,
                backoff,
            };
        }
    }

    /// Skips every call until an answer closes it, with no probe of its own due: for a
    /// lazily connected backend, whose first-contact thread is the probe.
    pub(crate) fn await_first_answer(&mut self, now: Instant) {
        self.phase = Phase::Probing {
            backoff: FIRST_BACKOFF,
        };
        self.opened_at = Some(now);
        self.last_summary = Some(now);
    }

    /// Whether calls are being skipped.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Closed { .. })
    }

    fn open(&mut self, now: Instant, backoff: Duration) {
        self.phase = Phase::Open {
            probe_at: now + backoff,
            backoff,
        };
    }

    /// `base` capped at [`MAX_BACKOFF`], minus up to 25 % (so the cap holds): probes
    /// from many processes do not arrive together.
    fn jittered(&mut self, base: Duration) -> Duration {
        let capped = base.min(MAX_BACKOFF);
        let cut = capped.mul_f64(self.rng.f64() * 0.25);
        capped.saturating_sub(cut).max(Duration::from_millis(1))
    }

    fn summary(&mut self, now: Instant) -> Option<Change> {
        let last = self.last_summary?;
        if now.saturating_duration_since(last) < SUMMARY_EVERY {
            return None;
        }
        self.last_summary = Some(now);
        let skipped = std::mem::take(&mut self.skipped_since_summary);
        Some(Change::StillOpen {
            skipped,
            open_for: self
                .opened_at
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
        })
    }
}

/// One backend's breaker: the [`State`] behind a lock, a [`Clock`], and the reports.
pub(crate) struct Breaker {
    address: String,
    clock: Clock,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker for the server at `address` (for messages).
    pub(crate) fn new(address: String, threshold: u32, clock: Clock) -> Self {
        Self {
            address,
            clock,
            state: Mutex::new(State::new(threshold, fastrand::Rng::new())),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call goes to the server, skips it, or skips it and sends the probe.
    pub(crate) fn admit(&self) -> Decision<'_> {
        let (admit, change) = self.state().admit((self.clock)());
        if let Some(change) = change {
            self.report(&change, None);
        }
        match admit {
            Admit::Call => Decision::Call(Permit { breaker: self }),
            Admit::Probe => Decision::Probe,
            Admit::Skip => Decision::Skip,
        }
    }

    /// Records the probe's outcome: `error` when the server did not answer.
    pub(crate) fn record_probe(&self, error: Option<&dyn std::fmt::Display>) {
        self.record(Admit::Probe, error);
    }

    /// The server answered a request of the backend's own (not a call's): closes the
    /// breaker if it is open.
    pub(crate) fn answered(&self) {
        self.record(Admit::Call, None);
    }

    /// Calls skip the server until [`answered`](Self::answered) (a lazily connected
    /// backend, before the server's first answer): no caller waits out a connect
    /// timeout against a server that has not answered yet.
    pub(crate) fn await_first_answer(&self) {
        let now = (self.clock)();
        self.state().await_first_answer(now);
    }

    /// The probe could not be sent: the next call sends it instead.
    pub(crate) fn abandon_probe(&self) {
        let now = (self.clock)();
        self.state().abandon_probe(now);
    }

    fn record(&self, admitted: Admit, error: Option<&dyn std::fmt::Display>) {
        let change = self
            .state()
            .record(admitted, error.is_some(), (self.clock)());
        if let Some(change) = change {
            self.report(&change, error);
        }
    }

    /// Whether calls are being skipped right now.
    pub(crate) fn is_open(&self) -> bool {
        self.state().is_open()
    }

    fn report(&self, change: &Change, error: Option<&dyn std::fmt::Display>) {
        let address = &self.address;
        let error = error.map(ToString::to_string).unwrap_or_default();
        match change {
            Change::Opened { failures, backoff } => tracing::warn!(
                address,
                failures,
                error,
                "Redis backend failing: circuit breaker opened after {failures} consecutive \
                 failures; calls skip the cache (computing without it) until a probe \
                 succeeds, the first in {backoff:?}"
            ),
            Change::ProbeFailed { backoff } => tracing::debug!(
                address,
                error,
                "Redis backend still failing: probe failed; next probe in {backoff:?}"
            ),
            Change::Closed { skipped, open_for } => tracing::info!(
                address,
                skipped,
                "Redis backend answers again: circuit breaker closed after {open_for:?} \
                 ({skipped} calls skipped the cache)"
            ),
            Change::StillOpen { skipped, open_for } => tracing::warn!(
                address,
                skipped,
                "Redis backend still failing after {open_for:?}: circuit breaker open, \
                 {skipped} calls skipped the cache since the last report"
            ),
        }
    }
}

/// What [`Breaker::admit`] decided for one call.
pub(crate) enum Decision<'a> {
    /// Send the call, then record its outcome.
    Call(Permit<'a>),
    /// Skip the server, and send the probe (the back-off is over).
    Probe,
    /// Skip the server.
    Skip,
}

/// Leave to call the server once; its outcome is [recorded](Permit::record) (a call
/// abandoned before an outcome, such as a dropped future, counts for nothing).
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
}

impl Permit<'_> {
    /// Records the call's outcome: `error` is the failure when the server did not
    /// answer, `None` when it did (even with an error reply).
    pub(crate) fn record(self, error: Option<&dyn std::fmt::Display>) {
        self.breaker.record(Admit::Call, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker(threshold: u32) -> (State, Instant) {
        (
            State::new(threshold, fastrand::Rng::with_seed(7)),
            Instant::now(),
        )
    }

    /// Fails `n` admitted calls at `now`; returns the last change.
    fn fail(state: &mut State, n: u32, now: Instant) -> Option<Change> {
        let mut last = None;
        for _ in 0..n {
            let (admit, _) = state.admit(now);
            assert_eq!(admit, Admit::Call);
            last = state.record(admit, true, now);
        }
        last
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let (mut state, t0) = breaker(3);
        assert_eq!(fail(&mut state, 2, t0), None);
        assert!(!state.is_open());
        let change = fail(&mut state, 1, t0);
        assert!(matches!(change, Some(Change::Opened { failures: 3, .. })));
        assert!(state.is_open());
    }

    #[test]
    fn a_success_resets_the_count() {
        let (mut state, t0) = breaker(3);
        fail(&mut state, 2, t0);
        let (admit, _) = state.admit(t0);
        assert_eq!(state.record(admit, false, t0), None);
        assert_eq!(fail(&mut state, 2, t0), None);
        assert!(!state.is_open());
    }

    #[test]
    fn open_skips_until_the_jittered_backoff_then_probes_once() {
        let (mut state, t0) = breaker(1);
        let Some(Change::Opened { backoff, .. }) = fail(&mut state, 1, t0) else {
            panic!("not opened");
        };
        assert!(backoff <= FIRST_BACKOFF && backoff >= FIRST_BACKOFF.mul_f64(0.75));
        assert_eq!(state.admit(t0 + backoff.saturating_sub(MS)).0, Admit::Skip);
        assert_eq!(state.admit(t0 + backoff).0, Admit::Probe);
        // While the probe is in flight, everyone else skips.
        assert_eq!(state.admit(t0 + backoff + MS).0, Admit::Skip);
    }

    #[test]
    fn the_first_success_closes_it() {
        let (mut state, t0) = breaker(1);
        fail(&mut state, 1, t0);
        state.admit(t0 + MS);
        let probe_at = t0 + FIRST_BACKOFF;
        assert_eq!(state.admit(probe_at).0, Admit::Probe);
        let change = state.record(Admit::Probe, false, probe_at);
        assert_eq!(
            change,
            Some(Change::Closed {
                skipped: 2,
                open_for: FIRST_BACKOFF
            })
        );
        assert_eq!(state.admit(probe_at).0, Admit::Call);
    }

    #[test]
    fn failed_probes_double_the_backoff_up_to_two_seconds() {
        let (mut state, t0) = breaker(1);
        fail(&mut state, 1, t0);
        let mut now = t0;
        let mut previous = Duration::ZERO;
        for _ in 0..10 {
            now += MAX_BACKOFF;
            assert_eq!(state.admit(now).0, Admit::Probe);
            let Some(Change::ProbeFailed { backoff }) = state.record(Admit::Probe, true, now)
            else {
                panic!("probe failure not reported");
            };
            assert!(backoff <= MAX_BACKOFF, "{backoff:?}");
            assert!(backoff >= previous.min(MAX_BACKOFF.mul_f64(0.75)));
            previous = backoff;
        }
        assert!(previous >= MAX_BACKOFF.mul_f64(0.75));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let (mut state, t0) = breaker(1);
        fail(&mut state, 1, t0);
        let at = t0 + FIRST_BACKOFF;
        assert_eq!(state.admit(at).0, Admit::Probe);
        state.abandon_probe(at);
        assert_eq!(state.admit(at).0, Admit::Probe);
    }

    #[test]
    fn late_failures_of_calls_sent_before_it_opened_change_nothing() {
        let (mut state, t0) = breaker(1);
        fail(&mut state, 1, t0);
        assert_eq!(state.record(Admit::Call, true, t0 + MS), None);
        assert_eq!(state.admit(t0 + MS).0, Admit::Skip);
    }

    #[test]
    fn a_summary_while_open_at_most_once_a_minute() {
        let (mut state, t0) = breaker(1);
        fail(&mut state, 1, t0);
        // Keep it open: every probe fails.
        let mut now = t0;
        let mut summaries = Vec::new();
        // 179.99 s in steps of 10 ms: summaries at 60 s and 120 s.
        for _ in 0..17_999 {
            now += 10 * MS;
            let (admit, change) = state.admit(now);
            summaries.extend(change);
            if admit == Admit::Probe {
                state.record(admit, true, now);
            }
        }
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        assert!(matches!(summaries[0], Change::StillOpen { skipped, .. } if skipped > 1000));
    }

    #[test]
    fn awaiting_the_first_answer_skips_every_call_until_an_answer() {
        let (mut state, now) = breaker(3);
        state.await_first_answer(now);
        let later = now + Duration::from_secs(30);
        assert_eq!(
            state.admit(later).0,
            Admit::Skip,
            "no probe falls due by itself"
        );
        assert!(matches!(
            state.record(Admit::Call, false, later),
            Some(Change::Closed { skipped: 1, .. })
        ));
        assert_eq!(state.admit(later).0, Admit::Call);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let (mut state, t0) = breaker(0);
        assert_eq!(fail(&mut state, 100, t0), None);
        assert!(!state.is_open());
    }

    #[test]
    fn the_breaker_reads_its_injected_clock() {
        let t0 = Instant::now();
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let read = Arc::clone(&offset);
        let clock: Clock =
            Arc::new(move || t0 + *read.lock().unwrap_or_else(PoisonError::into_inner));
        let breaker = Breaker::new("test".into(), 1, clock);
        let Decision::Call(permit) = breaker.admit() else {
            panic!("a closed breaker skipped a call");
        };
        permit.record(Some(&"refused"));
        assert!(matches!(breaker.admit(), Decision::Skip));
        *offset.lock().unwrap_or_else(PoisonError::into_inner) = MAX_BACKOFF;
        assert!(matches!(breaker.admit(), Decision::Probe));
        assert!(matches!(breaker.admit(), Decision::Skip));
        // A probe that could not be sent: the next call sends it.
        breaker.abandon_probe();
        assert!(matches!(breaker.admit(), Decision::Probe));
        breaker.record_probe(None);
        assert!(!breaker.is_open());
        assert!(matches!(breaker.admit(), Decision::Call(_)));
    }
}
