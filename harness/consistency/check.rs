//! The checker: every value a call returned, judged against the run's history.
//!
//! A violation is
//! - **order**: a call that began after a write of its key returned (a data change or
//!   an invalidation, or a forced refresh that did not say it failed to store)
//!   returned a value older than that write: of an older version, or computed before
//!   the write began (for a refresh: before the refresh's own computation). A near
//!   cache is allowed the invalidation's delivery for another process's write
//!   ([`plan::near_bound`]); that allowance is the run's `bound_ms`, and how late such
//!   a read actually was is `max_staleness_ms`;
//! - **wrong key**: a value computed for another function or argument;
//! - **unproduced**: a value no logged computation produced (or not as it says);
//! - **mixed**, **truncated**, **disordered**: an iterator whose items are not one
//!   computation's, all of them, in order;
//! - **lifetime**: a value returned later than its `expire + stale` after it was
//!   computed, by more than [`LIFETIME_SLACK`].

use std::collections::HashMap;
use std::time::Duration;

use crate::plan::{self, Form, Spec};
use crate::record::{Call, Comp, Fault, Record, Shape, Write};

/// How far past `expire + stale` a value may be returned before it counts: its store
/// may reach a stalled server late (up to the stall plus the response timeout), and
/// the server counts the TTL from then.
pub(crate) const LIFETIME_SLACK: Duration = Duration::from_secs(2);

/// What kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Order,
    WrongKey,
    Unproduced,
    Mixed,
    Truncated,
    Disordered,
    Lifetime,
}

/// One violation: the call, and the write it did not see (for `Order`).
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) kind: Kind,
    pub(crate) call: Call,
    pub(crate) write: Option<Write>,
}

/// The checker's findings.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) operations: u64,
    pub(crate) calls: u64,
    pub(crate) writes: u64,
    pub(crate) refreshes_said: u64,
    /// Iterator reads that panicked saying their sequence changed under them.
    pub(crate) iterators_changed: u64,
    /// Calls that returned a value older than a completed write, within the near
    /// cache's allowance.
    pub(crate) stale_allowed: u64,
    pub(crate) max_staleness_us: u64,
    pub(crate) violations: Vec<Violation>,
}

/// A key's completed writes in order of completion, with the running maximum of what
/// they require (so the first write a value fails is found by bisection).
struct Writes {
    list: Vec<Write>,
    max_version: Vec<u64>,
    max_started: Vec<u64>,
}

impl Writes {
    fn new(mut writes: Vec<Write>) -> Self {
        writes.sort_by_key(|w| w.done_us);
        let (mut v, mut s) = (0, 0);
        let mut max_version = Vec::with_capacity(writes.len());
        let mut max_started = Vec::with_capacity(writes.len());
        for w in &writes {
            v = v.max(w.min_version);
            s = s.max(w.min_started_us);
            max_version.push(v);
            max_started.push(s);
        }
        Self {
            list: writes,
            max_version,
            max_started,
        }
    }
}

fn fails(write: &Write, call: &Call) -> bool {
    write.min_version > call.value.version || write.min_started_us > call.value.started_us
}

/// Checks `records` (every process's log, and the faults) for a plan's functions.
pub(crate) fn check(records: &[Record], specs: &[Spec]) -> Report {
    let mut report = Report::default();
    let comps: HashMap<u64, Comp> = records
        .iter()
        .filter_map(|r| match r {
            Record::Comp(c) => Some((c.id, *c)),
            _ => None,
        })
        .collect();
    let mut by_key: HashMap<(u16, u16), Vec<Write>> = HashMap::new();
    for record in records {
        if let Record::Write(w) = record {
            if w.kind == crate::record::WriteKind::Refresh {
                report.refreshes_said += u64::from(w.said);
            } else {
                report.writes += 1;
            }
            if !w.said {
                by_key.entry((w.f, w.arg)).or_default().push(*w);
            }
        }
    }
    let by_key: HashMap<(u16, u16), Writes> = by_key
        .into_iter()
        .map(|(k, w)| (k, Writes::new(w)))
        .collect();
    let spec_of: HashMap<u16, &Spec> = specs.iter().map(|s| (s.id, s)).collect();
    let bound_us = micros(plan::near_bound());
    for record in records {
        let Record::Call(call) = record else { continue };
        report.calls += 1;
        let Some(spec) = spec_of.get(&call.f) else {
            continue;
        };
        if call.shape == Shape::Changed {
            report.iterators_changed += 1;
            continue;
        }
        for kind in judge_value(call, spec, &comps) {
            report.violations.push(Violation {
                kind,
                call: *call,
                write: None,
            });
        }
        let Some(writes) = by_key.get(&(call.f, call.arg)) else {
            continue;
        };
        judge_order(call, spec, writes, bound_us, &mut report);
    }
    report.operations = report.calls + report.writes;
    report
}

/// The violations a value shows by itself (not counting the key's order).
fn judge_value(call: &Call, spec: &Spec, comps: &HashMap<u64, Comp>) -> Vec<Kind> {
    let mut found = Vec::new();
    match call.shape {
        Shape::Whole | Shape::Changed => {}
        Shape::Mixed => found.push(Kind::Mixed),
        Shape::Truncated => found.push(Kind::Truncated),
        Shape::Disordered => found.push(Kind::Disordered),
    }
    if call.shape == Shape::Truncated && call.value.comp == u64::MAX {
        return found; // no item at all: nothing else to judge
    }
    let v = &call.value;
    if (v.f, v.arg) != (call.f, call.arg) {
        found.push(Kind::WrongKey);
    }
    let produced = comps.get(&v.comp).is_some_and(|c| {
        (c.f, c.arg, c.version, c.started_us) == (v.f, v.arg, v.version, v.started_us)
    });
    if !produced {
        found.push(Kind::Unproduced);
    }
    let lifetime = micros(spec.expire + spec.stale + LIFETIME_SLACK);
    if spec.form != Form::Iter && call.start_us > v.ended_us.saturating_add(lifetime) {
        found.push(Kind::Lifetime);
    }
    found
}

/// Judges a call against the writes of its key completed before it began.
fn judge_order(call: &Call, spec: &Spec, writes: &Writes, bound_us: u64, report: &mut Report) {
    let before = writes.list.partition_point(|w| w.done_us < call.start_us);
    if before == 0 {
        return;
    }
    let (v, s) = (call.value.version, call.value.started_us);
    let last = before - 1;
    if writes.max_version[last] <= v && writes.max_started[last] <= s {
        return;
    }
    // The first write the value fails (the running maxima only grow).
    let first = writes.max_version[..before]
        .iter()
        .zip(&writes.max_started[..before])
        .position(|(&mv, &ms)| mv > v || ms > s)
        .unwrap_or(last);
    let failing = writes.list[first..before].iter().filter(|w| fails(w, call));
    let mut allowed = spec.near;
    let mut earliest: Option<&Write> = None;
    for write in failing {
        let late = call.start_us - write.done_us;
        // A process's own writes drop its near copy before they return.
        if write.proc == call.proc || late > bound_us {
            allowed = false;
        }
        if earliest.is_none_or(|e| write.done_us < e.done_us) {
            earliest = Some(write);
        }
    }
    let Some(earliest) = earliest else { return };
    let staleness = call.start_us - earliest.done_us;
    report.max_staleness_us = report.max_staleness_us.max(staleness);
    if allowed {
        report.stale_allowed += 1;
    } else {
        report.violations.push(Violation {
            kind: Kind::Order,
            call: *call,
            write: Some(*earliest),
        });
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The faults that overlap `[from, to]` (µs), for a violation's report.
pub(crate) fn faults_between(records: &[Record], from: u64, to: u64) -> Vec<&Fault> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Fault(f) if f.start_us <= to && f.end_us >= from => Some(f),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Value;
    use crate::record::{CallKind, WriteKind};

    fn spec(near: bool) -> Spec {
        Spec::new(1, Form::Sync, near)
    }

    fn comp(comp: u64, version: u64, started_us: u64) -> Record {
        Record::Comp(Comp {
            id: comp,
            f: 1,
            arg: 0,
            version,
            started_us,
        })
    }

    fn call(proc: u8, start_us: u64, comp: u64, version: u64, started_us: u64) -> Record {
        Record::Call(Call {
            proc,
            f: 1,
            arg: 0,
            kind: CallKind::Read,
            start_us,
            end_us: start_us + 10,
            value: Value {
                f: 1,
                arg: 0,
                version,
                comp,
                started_us,
                ended_us: started_us + 5,
            },
            shape: Shape::Whole,
        })
    }

    fn change(proc: u8, start_us: u64, done_us: u64, version: u64) -> Record {
        Record::Write(Write {
            proc,
            f: 1,
            arg: 0,
            kind: WriteKind::Change,
            start_us,
            done_us,
            min_version: version,
            min_started_us: start_us,
            said: false,
        })
    }

    fn kinds(report: &Report) -> Vec<Kind> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_read_after_a_change_must_see_it() {
        let records = [
            comp(1, 0, 100),
            change(0, 1_000, 1_100, 1),
            call(0, 1_050, 1, 0, 100), // began before the change returned: fine
            call(0, 1_200, 1, 0, 100), // after: an older version
        ];
        let report = check(&records, &[spec(false)]);
        assert_eq!(kinds(&report), [Kind::Order]);
        assert_eq!(report.max_staleness_us, 100);
    }

    #[test]
    fn another_process_near_copy_is_allowed_the_delivery_bound() {
        let bound = micros(plan::near_bound());
        let records = [
            comp(1, 0, 100),
            change(1, 1_000, 1_100, 1),
            call(0, 1_100 + bound / 2, 1, 0, 100),
            call(1, 1_200, 1, 0, 100), // the writer's own process: no allowance
            call(0, 1_101 + bound, 1, 0, 100),
        ];
        let report = check(&records, &[spec(true)]);
        assert_eq!(kinds(&report), [Kind::Order, Kind::Order]);
        assert_eq!(report.stale_allowed, 1);
        assert_eq!(report.max_staleness_us, bound + 1);
    }

    #[test]
    fn a_value_computed_before_an_invalidation_is_older_than_it() {
        let records = [
            comp(1, 3, 900),
            comp(2, 3, 1_150),
            Record::Write(Write {
                proc: 0,
                f: 1,
                arg: 0,
                kind: WriteKind::Invalidate,
                start_us: 1_000,
                done_us: 1_100,
                min_version: 0,
                min_started_us: 1_000,
                said: false,
            }),
            call(1, 1_200, 1, 3, 900),
            call(1, 1_200, 2, 3, 1_150),
        ];
        let report = check(&records, &[spec(false)]);
        assert_eq!(kinds(&report), [Kind::Order]);
    }

    #[test]
    fn values_nobody_computed_or_of_another_key_are_violations() {
        let mut wrong = call(0, 10, 1, 0, 5);
        if let Record::Call(c) = &mut wrong {
            c.value.arg = 2;
        }
        let records = [comp(1, 0, 5), call(0, 10, 9, 0, 5), wrong];
        let report = check(&records, &[spec(false)]);
        assert_eq!(
            kinds(&report),
            [Kind::Unproduced, Kind::WrongKey, Kind::Unproduced]
        );
    }
}
