//! The blocking driver's direct read (`Driver::get`, 7d4f5e6) against what
//! `plan` and `answer` make of `Io::Get` (`Driver::step`), and against the async path
//! (`step_async`): the same event, the same near-tier flag, the same large-value
//! expansion, for a miss, a small value, a large value (and one of another type), a
//! near-tier reply and a failing backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::super::call::Call;
use super::super::machine::{Event, Io};
use super::Driver;
use crate::backend::memory::MemoryBackend;
use crate::backend::{BackendCore, ImmediateBackend, Op, Reply};
use crate::codec;
use crate::error::Error;
use crate::memoize::memoize;
use crate::options::{MemoizeOptions, Refresh};

/// How the wrapper answers a read of the value's key.
const PLAIN: u8 = 0;
const NEAR: u8 = 1;
const FAIL: u8 = 2;

/// A memory backend whose read of `key` can come from a "near tier" or fail.
struct Tweak {
    inner: MemoryBackend,
    key: String,
    mode: AtomicU8,
}

impl BackendCore for Tweak {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        match op {
            Op::Get { key } if key == self.key => match self.mode.load(Ordering::SeqCst) {
                NEAR => self.inner.execute(op).map(|reply| match reply {
                    Reply::Value(Some(bytes)) => Reply::Near(bytes),
                    reply => reply,
                }),
                FAIL => Err(Error::backend("get", key, "the backend is down")),
                _ => self.inner.execute(op),
            },
            op => self.inner.execute(op),
        }
    }
}

impl ImmediateBackend for Tweak {}

/// What a read event says: the bytes read or the error's text.
fn said(event: &Event) -> String {
    match event {
        Event::Read(Ok(bytes)) => format!(
            "{:?}",
            bytes.as_ref().map(|b| (b.len(), crc32fast::hash(b)))
        ),
        Event::Read(Err(err)) => format!("error {err}"),
        _ => "not a read".into(),
    }
}

/// The event and near flag of a read of `key` by each path.
fn reads(
    opts: &MemoizeOptions,
    key: &str,
    holds: fn(&[u8], u32, u64) -> bool,
) -> [(String, bool); 3] {
    let call = Call::new(key, opts, Refresh::IfMissing);
    let direct = {
        let mut driver = Driver::blocking(&call);
        driver.holds = holds;
        driver.near = !driver.near;
        let event = driver.get();
        (said(&event), driver.near)
    };
    let planned = {
        let mut driver = Driver::blocking(&call);
        driver.holds = holds;
        driver.near = !driver.near;
        let event = driver.step(Io::Get);
        (said(&event), driver.near)
    };
    let awaited = {
        let mut driver = Driver::nonblocking(&call);
        driver.holds = holds;
        driver.near = !driver.near;
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        let event = runtime.map(|rt| rt.block_on(driver.step_async(Io::Get)));
        (
            event.map_or_else(|e| e.to_string(), |e| said(&e)),
            driver.near,
        )
    };
    [direct, planned, awaited]
}

#[test]
fn the_direct_read_is_what_plan_and_answer_make_of_a_get() {
    let mut failures = Vec::new();
    for (name, large) in [("small", false), ("large", true)] {
        let key = format!("direct-read:{name}");
        let backend = Arc::new(Tweak {
            inner: MemoryBackend::new(),
            key: crate::key::make_cache_key(&key).as_str().to_owned(),
            mode: AtomicU8::new(PLAIN),
        });
        let opts = MemoizeOptions::new()
            .backend(backend.clone())
            .large_values(1024);
        let value = if large {
            vec![7_u8; 1_200_000]
        } else {
            vec![7_u8; 10]
        };
        for stored in [false, true] {
            if stored {
                let made: Vec<u8> = memoize(&key, &opts, || value.clone());
                assert_eq!(made, value);
            }
            for mode in [PLAIN, NEAR, FAIL] {
                backend.mode.store(mode, Ordering::SeqCst);
                for (holds, kind) in [
                    (
                        codec::manifest_holds::<Vec<u8>> as fn(&[u8], u32, u64) -> bool,
                        "its type",
                    ),
                    (codec::manifest_holds::<String>, "another type"),
                ] {
                    let [direct, planned, awaited] = reads(&opts, &key, holds);
                    let case = format!("{name}, stored {stored}, mode {mode}, {kind}");
                    // Not vacuous: the near tier said, a large value expanded only for
                    // its own type.
                    if stored && mode != FAIL && direct.1 != (mode == NEAR) {
                        failures.push(format!("{case}: near flag {}", direct.1));
                    }
                    let expanded = direct.0.contains("Some((12000");
                    if stored && mode != FAIL && large && expanded != (kind == "its type") {
                        failures.push(format!("{case}: expanded {expanded}: {}", direct.0));
                    }
                    if direct != planned {
                        failures.push(format!("{case}: get {direct:?}, plan/answer {planned:?}"));
                    }
                    if direct != awaited {
                        failures.push(format!("{case}: get {direct:?}, async {awaited:?}"));
                    }
                }
            }
            backend.mode.store(PLAIN, Ordering::SeqCst);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
