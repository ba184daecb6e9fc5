//! The history a run leaves: every computation, every call's result, every write (a
//! data change, an invalidation, a forced refresh) and every fault, one line each, in
//! a log file per process. The checker (`check.rs`) reads them back.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::plan::Value;

/// Microseconds since the epoch: one clock for every process of the machine.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// A computation: which key, which version it read, when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Comp {
    pub(crate) id: u64,
    pub(crate) f: u16,
    pub(crate) arg: u16,
    pub(crate) version: u64,
    pub(crate) started_us: u64,
}

/// How a call got its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Read,
    Refresh,
    Iter,
    IterRefresh,
}

/// What an iterator's items looked like (a plain value is always `Whole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One computation's items, all of them, in order.
    Whole,
    /// Items of two computations (or versions).
    Mixed,
    /// Fewer items than the sequence has, or none.
    Truncated,
    /// Items out of order, or repeated.
    Disordered,
    /// The iterator panicked, saying its sequence changed under a slow reader (what
    /// the contract allows instead of a mixture).
    Changed,
}

/// One call and what it returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    pub(crate) proc: u8,
    pub(crate) f: u16,
    pub(crate) arg: u16,
    pub(crate) kind: CallKind,
    pub(crate) start_us: u64,
    pub(crate) end_us: u64,
    pub(crate) value: Value,
    pub(crate) shape: Shape,
}

/// What a write was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// The input's version was bumped, then the key invalidated.
    Change,
    /// The key was invalidated (inputs unchanged).
    Invalidate,
    /// `refresh(|| f(x))` returned.
    Refresh,
}

/// A completed write: every call of its key that begins after `done_us` (plus the
/// near cache's allowance, for another process) must return a value of at least
/// `min_version`, computed no earlier than `min_started_us`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write {
    pub(crate) proc: u8,
    pub(crate) f: u16,
    pub(crate) arg: u16,
    pub(crate) kind: WriteKind,
    pub(crate) start_us: u64,
    pub(crate) done_us: u64,
    pub(crate) min_version: u64,
    pub(crate) min_started_us: u64,
    /// The library said (a WARN, a fail-open, a lock timeout) that a refresh may not
    /// have stored: it orders nothing.
    pub(crate) said: bool,
}

/// A fault the conductor injected, and when.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: String,
    pub(crate) start_us: u64,
    pub(crate) end_us: u64,
}

/// One line of a log.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Comp(Comp),
    Call(Call),
    Write(Write),
    Fault(Fault),
}

fn call_kind(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Read => "read",
        CallKind::Refresh => "refresh",
        CallKind::Iter => "iter",
        CallKind::IterRefresh => "iter_refresh",
    }
}

fn shape(shape: Shape) -> &'static str {
    match shape {
        Shape::Whole => "whole",
        Shape::Mixed => "mixed",
        Shape::Truncated => "truncated",
        Shape::Disordered => "disordered",
        Shape::Changed => "changed",
    }
}

fn write_kind(kind: WriteKind) -> &'static str {
    match kind {
        WriteKind::Change => "change",
        WriteKind::Invalidate => "invalidate",
        WriteKind::Refresh => "refresh",
    }
}

impl Record {
    /// The record as one line (no newline).
    pub(crate) fn line(&self) -> String {
        let mut out = String::new();
        let _ = match self {
            Record::Comp(c) => write!(
                out,
                "C {} {} {} {} {}",
                c.id, c.f, c.arg, c.version, c.started_us
            ),
            Record::Call(c) => write!(
                out,
                "R {} {} {} {} {} {} {} {} {} {} {} {} {}",
                c.proc,
                c.f,
                c.arg,
                call_kind(c.kind),
                c.start_us,
                c.end_us,
                c.value.f,
                c.value.arg,
                c.value.version,
                c.value.comp,
                c.value.started_us,
                c.value.ended_us,
                shape(c.shape)
            ),
            Record::Write(w) => write!(
                out,
                "W {} {} {} {} {} {} {} {} {}",
                w.proc,
                w.f,
                w.arg,
                write_kind(w.kind),
                w.start_us,
                w.done_us,
                w.min_version,
                w.min_started_us,
                u8::from(w.said)
            ),
            Record::Fault(f) => write!(out, "F {} {} {}", f.kind, f.start_us, f.end_us),
        };
        out
    }

    /// Reads a line written by [`line`](Self::line).
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let tag = fields.next()?;
        let rest: Vec<&str> = fields.collect();
        let n = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok());
        let s = |i: usize| rest.get(i).and_then(|s| s.parse::<u16>().ok());
        Some(match tag {
            "C" => Record::Comp(Comp {
                id: n(0)?,
                f: s(1)?,
                arg: s(2)?,
                version: n(3)?,
                started_us: n(4)?,
            }),
            "R" => Record::Call(Call {
                proc: rest.first()?.parse().ok()?,
                f: s(1)?,
                arg: s(2)?,
                kind: match *rest.get(3)? {
                    "read" => CallKind::Read,
                    "refresh" => CallKind::Refresh,
                    "iter" => CallKind::Iter,
                    "iter_refresh" => CallKind::IterRefresh,
                    _ => return None,
                },
                start_us: n(4)?,
                end_us: n(5)?,
                value: Value {
                    f: s(6)?,
                    arg: s(7)?,
                    version: n(8)?,
                    comp: n(9)?,
                    started_us: n(10)?,
                    ended_us: n(11)?,
                },
                shape: match *rest.get(12)? {
                    "whole" => Shape::Whole,
                    "mixed" => Shape::Mixed,
                    "truncated" => Shape::Truncated,
                    "disordered" => Shape::Disordered,
                    "changed" => Shape::Changed,
                    _ => return None,
                },
            }),
            "W" => Record::Write(Write {
                proc: rest.first()?.parse().ok()?,
                f: s(1)?,
                arg: s(2)?,
                kind: match *rest.get(3)? {
                    "change" => WriteKind::Change,
                    "invalidate" => WriteKind::Invalidate,
                    "refresh" => WriteKind::Refresh,
                    _ => return None,
                },
                start_us: n(4)?,
                done_us: n(5)?,
                min_version: n(6)?,
                min_started_us: n(7)?,
                said: n(8)? == 1,
            }),
            "F" => Record::Fault(Fault {
                kind: (*rest.first()?).to_owned(),
                start_us: n(1)?,
                end_us: n(2)?,
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_reads_back_as_written() {
        let value = Value {
            f: 3,
            arg: 2,
            version: 9,
            comp: 77,
            started_us: 10,
            ended_us: 12,
        };
        let records = [
            Record::Comp(Comp {
                id: 77,
                f: 3,
                arg: 2,
                version: 9,
                started_us: 10,
            }),
            Record::Call(Call {
                proc: 1,
                f: 3,
                arg: 2,
                kind: CallKind::IterRefresh,
                start_us: 5,
                end_us: 20,
                value,
                shape: Shape::Mixed,
            }),
            Record::Write(Write {
                proc: 0,
                f: 3,
                arg: 2,
                kind: WriteKind::Refresh,
                start_us: 1,
                done_us: 2,
                min_version: 9,
                min_started_us: 10,
                said: true,
            }),
            Record::Fault(Fault {
                kind: "restart".into(),
                start_us: 1,
                end_us: 2,
            }),
        ];
        for record in records {
            let line = record.line();
            let back = Record::parse(&line).map(|r| r.line());
            assert_eq!(back.as_deref(), Some(line.as_str()));
        }
    }
}
