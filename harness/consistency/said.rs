//! Whether the library *said* that a forced refresh may not have stored its value.
//!
//! A forced refresh "lands or says so" (issue 19): it stores its value, or the caller
//! can see that it did not: a WARN, or the call's outcome (`fail_open`, `lock_timeout`:
//! computed without the backend, or without the lock; `voided`: its lock voided by an
//! invalidation), which the `metrics` counters
//! and `stats()` show. A DEBUG line alone is not saying so. This subscriber watches the thread that makes a
//! refresh ([`watch`]) and notes any of those; a refresh that said nothing is a write
//! every later call must see. It also counts WARN events process-wide. Everything else
//! stays disabled: a hit pays one thread-local read for its DEBUG event's check.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static SAID: Cell<bool> = const { Cell::new(false) };
}

static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// The WARN (or ERROR) events the library logged in this process.
pub(crate) fn warnings() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

/// Runs `call` on this thread, and whether the library said meanwhile that a write may
/// not have landed.
pub(crate) fn watch<R>(call: impl FnOnce() -> R) -> (R, bool) {
    SAID.with(|said| said.set(false));
    WATCHING.with(|watching| watching.set(true));
    let out = call();
    WATCHING.with(|watching| watching.set(false));
    (out, SAID.with(Cell::get))
}

/// Installs the listener as the process's subscriber.
pub(crate) fn install() {
    let _ = tracing::subscriber::set_global_default(Listener);
}

struct Listener;

/// The outcomes of `cache_memoize::observe`'s per-call DEBUG event that mean the call
/// computed without storing under the lock (`voided`: an invalidation voided its lock,
/// counted in `Stats::voided`).
const UNSTORED: [&str; 3] = ["fail_open", "lock_timeout", "voided"];

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("cache_memoize")
}

impl Subscriber for Listener {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && ours(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        ours(meta)
            && (*meta.level() <= Level::WARN
                || (*meta.level() == Level::DEBUG && WATCHING.with(Cell::get)))
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        if *meta.level() <= Level::WARN {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
            if WATCHING.with(Cell::get) {
                SAID.with(|said| said.set(true));
            }
            return;
        }
        // DEBUG, while watching: the call's outcome. (Other DEBUG reports are not
        // "saying so": nobody sees them in production.)
        let mut outcome = Outcome(false);
        event.record(&mut outcome);
        if outcome.0 {
            SAID.with(|flag| flag.set(true));
        }
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Finds an `outcome` field naming a computation that stored nothing.
struct Outcome(bool);

impl Visit for Outcome {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "outcome" && UNSTORED.contains(&value) {
            self.0 = true;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}
