//! Model-based tests of one key's order of writes: two or three callers run the real
//! sequence (machine and driver) step by step against a `MemoryBackend`, in an order
//! `proptest` draws, with invalidations, data changes, lock expiries and a moving clock
//! between their steps. Each caller's unit of progress is one backend operation (or
//! the start of its computation, or its encoding), so every interleaving of backend
//! operations is reachable; a follower waiting for its in-process leader is runnable
//! only once the leader has ended.
//!
//! After every unit, and for every call that returns, the key's order is checked:
//! - a store never lands over a value whose computation began later, nor after an
//!   invalidation (or a data change) that came after its computation began;
//! - a call that began after an invalidation, a data change, or a forced refresh that
//!   stored (it ended without a note) returns a value computed after it began (after
//!   the refresh's computation began): never the older one.
//!
//! Computations read the model's authoritative version; the "data change" bumps it
//! and invalidates the key. A lock's expiry is its key's removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::super::call::Call;
use super::super::machine::{Event, Io, Machine, Note, Step};
use super::{Driver, Lookup, Stored};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, CacheBackend};
use crate::codec::{self, Codec};
use crate::lock::LockOptions;
use crate::options::{Clock, MemoizeOptions, Refresh};
use crate::refresh::claim::RefreshClaim;

/// A value: the version its computation read, and the computation's number (the
/// model time it began).
type Val = (u64, u64);

/// The model's clock (milliseconds since the epoch), moved by the schedule.
struct ModelClock(AtomicU64);

impl Clock for ModelClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// What a caller slot calls, again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain call (hit, wait, follow, or compute and store).
    Get,
    /// `refresh(|| f(x))`.
    Forced,
}

/// One thing the schedule does.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Caller slot `n` (modulo the slots) makes one unit of progress, or begins a new call.
    Step(usize),
    /// `invalidate(key)`.
    Invalidate,
    /// The input changes (its version bumped), then `invalidate(key)`.
    Change,
    /// The input changes, and nobody invalidates (a forced refresh may follow).
    Bump,
    /// The key's lock expires (whoever holds it).
    ExpireLock,
    /// The clock moves on by this many seconds.
    Tick(u64),
}

/// The options every caller of the key uses.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// `None`: no lock; `Some(true)`: a blocking lock (callers coalesce);
    /// `Some(false)`: a lock that does not wait.
    lock: Option<bool>,
    /// Seconds a value may be served past its freshness (0: none).
    stale_s: u64,
    kinds: [Kind; 3],
    slots: usize,
}

fn setups() -> impl Strategy<Value = Setup> {
    let kind = prop_oneof![3 => Just(Kind::Get), 1 => Just(Kind::Forced)];
    (
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
        prop_oneof![Just(0_u64), Just(30)],
        [kind.clone(), kind.clone(), kind],
        2_usize..=3,
    )
        .prop_map(|(lock, stale_s, kinds, slots)| Setup {
            lock,
            stale_s,
            kinds,
            slots,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        12 => (0_usize..3).prop_map(Op::Step),
        1 => Just(Op::Invalidate),
        1 => Just(Op::Change),
        1 => Just(Op::Bump),
        1 => Just(Op::ExpireLock),
        1 => (5_u64..40).prop_map(Op::Tick),
    ];
    proptest::collection::vec(op, 1..120)
}

/// Where a caller is.
enum Next {
    /// Between calls.
    Idle,
    /// Feed this event (the outcome of the backend operation just performed).
    Feed(Event),
    /// Waiting for this process's leader, at most `max`.
    Await(Option<Duration>),
    /// Computing: the value is read; next, encode it and go on.
    Computing(Val),
}

/// One caller slot: its calls' sequence and driver, and what its current call is.
struct Caller<'c, 'o> {
    kind: Kind,
    call: &'c Call<'o>,
    revalidation: &'c Call<'o>,
    driver: Driver<'c, 'o>,
    machine: Machine<'c, Val>,
    next: Next,
    /// The model time the current call began.
    began: u64,
    /// A stale value's refresh is under way (the value was returned already).
    refreshing: Option<RefreshClaim>,
    /// The value being computed, until the computation's store has ended.
    computed: Option<Val>,
    /// Whether the current call sent its store.
    sent_store: bool,
    /// Whether the current call said (at WARN) that it may not store.
    said: bool,
}

/// The key's history, and the checks of its order.
struct World {
    now: u64,
    version: u64,
    backend: Arc<MemoryBackend>,
    key: String,
    lock_key: String,
    /// The model time of the last invalidation (or data change).
    invalidated: u64,
    /// The computation of the value stored now (or last, before an invalidation), and
    /// of the newest stored since the last invalidation.
    newest_stored: Option<u64>,
    /// Completed writes: (model time done, the least computation a later call may
    /// return).
    floors: Vec<(u64, u64)>,
    log: Vec<String>,
}

impl World {
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    fn invalidate(&mut self, change: bool) {
        let at = self.tick();
        if change {
            self.version += 1;
        }
        let invalidated = self.backend.invalidate(&self.key, &self.lock_key);
        assert!(invalidated.is_ok(), "the memory backend invalidates");
        self.invalidated = at;
        self.newest_stored = None;
        self.floors.push((at, at));
        self.log
            .push(format!("{at}: invalidate (version now {})", self.version));
    }

    /// Checks what the backend holds now against what it held: a new value must come
    /// from a computation that began after the last invalidation and after the
    /// computation of every value stored since.
    fn check_store(&mut self) {
        let Ok(Some(bytes)) = self.backend.get(&self.key) else {
            return;
        };
        let Some(((_, comp), _)) = codec::decode_with::<Val>(Codec::Bincode, &bytes, 0) else {
            panic!("the stored bytes decode");
        };
        if self.newest_stored == Some(comp) {
            return;
        }
        let log = self.log.join("\n");
        assert!(
            comp > self.invalidated,
            "a value computed at {comp} landed after the invalidation at {}:\n{log}",
            self.invalidated
        );
        if let Some(newest) = self.newest_stored {
            assert!(
                comp > newest,
                "a value computed at {comp} landed over a newer one (computed at {newest}):\n{log}"
            );
        }
        self.newest_stored = Some(comp);
        self.log
            .push(format!("{}: stored the value of {comp}", self.now));
    }

    /// Checks a value returned by a call that began at `began`.
    fn check_read(&self, began: u64, (version, comp): Val) {
        let floor = self
            .floors
            .iter()
            .filter(|(done, _)| *done < began)
            .map(|(_, least)| *least)
            .max();
        if let Some(least) = floor {
            let log = self.log.join("\n");
            assert!(
                comp >= least,
                "a call begun at {began} returned the value of {comp} (version {version}), \
                 older than a write it must see (computed from {least} on):\n{log}"
            );
        }
    }
}

impl<'c, 'o> Caller<'c, 'o> {
    fn new(kind: Kind, call: &'c Call<'o>, revalidation: &'c Call<'o>) -> Self {
        Self {
            kind,
            call,
            revalidation,
            driver: Driver::blocking(call),
            machine: call.machine::<Val>(true, None),
            next: Next::Idle,
            began: 0,
            refreshing: None,
            computed: None,
            sent_store: false,
            said: false,
        }
    }

    /// Whether a unit of progress is possible now (a follower waits for its leader).
    fn runnable(&self) -> bool {
        match self.next {
            Next::Await(_) => self.driver.flight.as_ref().is_none_or(|flight| {
                !matches!(
                    flight.wait(Some(Duration::ZERO)),
                    crate::coalesce::Landed::TimedOut
                )
            }),
            _ => true,
        }
    }

    fn busy(&self) -> bool {
        !matches!(self.next, Next::Idle)
    }

    /// One unit of progress (or a new call, when idle).
    fn step(&mut self, world: &mut World) {
        let at = world.tick();
        match std::mem::replace(&mut self.next, Next::Idle) {
            Next::Idle => {
                self.began = at;
                self.sent_store = false;
                self.said = false;
                self.driver = Driver::blocking(self.call);
                self.machine = self.call.machine::<Val>(true, None);
                world.log.push(format!("{at}: {:?} call begins", self.kind));
                self.feed(Event::Start, world);
            }
            Next::Feed(event) => self.feed(event, world),
            Next::Await(max) => {
                let event = self.driver.perform(Io::AwaitLeader { max });
                self.feed(event, world);
            }
            Next::Computing(value) => {
                let encoded = self
                    .driver
                    .computed(None, Instant::now(), Stored::Value(&value));
                self.feed(Event::Computed(encoded), world);
            }
        }
        world.check_store();
    }

    /// Feeds `event` and goes as far as the next backend operation (performed), the
    /// start of a computation, or the call's end.
    fn feed(&mut self, event: Event, world: &mut World) {
        let now_ms = self.driver.now_ms(&self.machine);
        let share = self.machine.share();
        let step = self.machine.on(now_ms, event);
        let io = match step {
            Step::Io(io) => io,
            Step::Finished { note, landing } => {
                self.said |= note.as_ref().is_some_and(warns);
                let stored = self.sent_store && note.is_none();
                self.driver
                    .finished::<Val>(Step::Finished { note, landing });
                self.end_computation(stored, world);
                return;
            }
            decided => {
                if let Step::Compute {
                    note: Some(note), ..
                } = &decided
                {
                    self.said |= warns(note);
                }
                let lookup = self.driver.decided(decided, share);
                self.decided(lookup, world);
                return;
            }
        };
        self.next = match io {
            Io::AwaitLeader { max } => Next::Await(max),
            Io::Pause { .. } => {
                self.driver.mark(Some(&io));
                Next::Feed(Event::Paused(None))
            }
            io => {
                self.sent_store |= matches!(io, Io::StoreAndRelease { .. });
                Next::Feed(self.driver.perform(io))
            }
        };
    }

    fn decided(&mut self, lookup: Lookup<Val>, world: &mut World) {
        match lookup {
            Lookup::Found(value) => self.returned(value, world),
            Lookup::Revalidate(value, trigger) => {
                // Returned at once (as a detached refresh does); the refresh goes on.
                self.returned(value, world);
                self.refreshing = Some(trigger.claim);
                self.driver = Driver::blocking(self.revalidation);
                self.machine = self
                    .revalidation
                    .machine::<Val>(false, None)
                    .revalidating(trigger.stamp);
                self.next = Next::Feed(Event::Start);
            }
            Lookup::Compute(_) => {
                self.driver.mark(None);
                let comp = world.tick();
                world.log.push(format!(
                    "{comp}: computation begins (version {})",
                    world.version
                ));
                self.computed = Some((world.version, comp));
                self.next = Next::Computing((world.version, comp));
            }
            Lookup::Skip { .. } => self.refreshing = None,
        }
    }

    /// A computation stored (`stored`: the backend accepted it), or not.
    fn end_computation(&mut self, stored: bool, world: &mut World) {
        let Some(value) = self.computed.take() else {
            return;
        };
        let at = world.now;
        world.log.push(format!(
            "{at}: computation of {} ends, stored: {stored}",
            value.1
        ));
        if self.refreshing.take().is_some() {
            return; // a stale value's refresh: its caller returned already
        }
        // A forced refresh lands or says so: one that said nothing is a write every
        // later call must see.
        if self.kind == Kind::Forced && !self.said {
            world.floors.push((at, value.1));
        }
        self.returned(value, world);
    }

    fn returned(&mut self, value: Val, world: &mut World) {
        world.log.push(format!(
            "{}: {:?} call begun at {} returns {value:?}",
            world.now, self.kind, self.began
        ));
        world.check_read(self.began, value);
    }
}

/// Whether the sequence reports `note` at WARN (what a caller can see), not at DEBUG.
fn warns(note: &Note) -> bool {
    !matches!(note, Note::Concurrent | Note::LockBusy)
}

/// Runs `ops` on callers set up as `setup` say, checking the key's order throughout,
/// then lets every call end (a follower whose leader never lands fails the test).
fn run(setup: Setup, schedule: &[Op]) {
    static KEYS: AtomicU64 = AtomicU64::new(0);
    let backend = Arc::new(MemoryBackend::new());
    let clock = Arc::new(ModelClock(AtomicU64::new(1_700_000_000_000)));
    let opts = options(setup, &backend, &clock);
    let key = format!("model:{}", KEYS.fetch_add(1, Ordering::Relaxed));
    let refresh = |kind| match kind {
        Kind::Get => Refresh::IfMissing,
        Kind::Forced => Refresh::Forced,
    };
    let calls: Vec<Call<'_>> = setup.kinds[..setup.slots]
        .iter()
        .map(|&kind| Call::new(&key, &opts, refresh(kind)))
        .collect();
    let revalidations: Vec<Call<'_>> = calls.iter().map(Call::revalidation).collect();
    let mut callers: Vec<Caller<'_, '_>> = calls
        .iter()
        .zip(&revalidations)
        .zip(setup.kinds)
        .map(|((call, revalidation), kind)| Caller::new(kind, call, revalidation))
        .collect();
    let cache_key = crate::key::make_cache_key(&key);
    let mut world = World {
        now: 0,
        version: 0,
        backend: Arc::clone(&backend),
        key: cache_key.as_str().to_owned(),
        lock_key: cache_key.lock_key(),
        invalidated: 0,
        newest_stored: None,
        floors: Vec::new(),
        log: vec![format!("{setup:?}")],
    };
    for &op in schedule {
        match op {
            Op::Step(n) => {
                let caller = &mut callers[n % setup.slots];
                if caller.runnable() {
                    caller.step(&mut world);
                }
            }
            Op::Invalidate => world.invalidate(false),
            Op::Change => world.invalidate(true),
            Op::Bump => {
                world.version += 1;
                let at = world.tick();
                world.log.push(format!(
                    "{at}: version now {}, not invalidated",
                    world.version
                ));
            }
            Op::ExpireLock => {
                let at = world.tick();
                let expired = backend.delete(&world.lock_key);
                assert!(expired.is_ok(), "the memory backend deletes");
                world.log.push(format!("{at}: the lock expires"));
            }
            Op::Tick(seconds) => {
                clock.0.fetch_add(seconds * 1000, Ordering::SeqCst);
                let at = world.tick();
                world
                    .log
                    .push(format!("{at}: the clock moves {seconds} s on"));
            }
        }
    }
    drain(&mut callers, &mut world);
}

/// The options every caller of the key uses.
fn options(setup: Setup, backend: &Arc<MemoryBackend>, clock: &Arc<ModelClock>) -> MemoizeOptions {
    let mut opts = MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(60))
        .clock(Arc::clone(clock) as Arc<dyn Clock>);
    if setup.stale_s > 0 {
        opts = opts.stale(Duration::from_secs(setup.stale_s));
    }
    if let Some(blocking) = setup.lock {
        opts = opts.lock(LockOptions {
            expire: Duration::from_secs(30),
            timeout: None,
            retry: Duration::from_millis(1),
            blocking,
        });
    }
    opts
}

/// Lets every call end, each runnable caller a step at a time.
fn drain(callers: &mut [Caller<'_, '_>], world: &mut World) {
    let slots = callers.len();
    for _ in 0..10_000 {
        let busy: Vec<usize> = (0..slots).filter(|&i| callers[i].busy()).collect();
        if busy.is_empty() {
            if std::env::var_os("MODEL_LOG").is_some() {
                eprintln!("{}", world.log.join("\n"));
            }
            return;
        }
        let runnable: Vec<usize> = busy
            .into_iter()
            .filter(|&i| callers[i].runnable())
            .collect();
        assert!(
            !runnable.is_empty(),
            "followers wait for a leader that never lands:\n{}",
            world.log.join("\n")
        );
        for i in runnable {
            callers[i].step(world);
        }
    }
    panic!("the calls never end:\n{}", world.log.join("\n"));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any interleaving of two or three callers' steps with invalidations, data
    /// changes, lock expiries and a moving clock keeps the key's one order of writes.
    #[test]
    fn every_interleaving_keeps_the_order_of_writes(setup in setups(), ops in ops()) {
        run(setup, &ops);
    }
}

const GET_GET: Setup = Setup {
    lock: Some(true),
    stale_s: 0,
    kinds: [Kind::Get, Kind::Get, Kind::Get],
    slots: 2,
};

/// Issue 19 #2: a leader's store is applied, an invalidation returns, then a new
/// caller joins the leader's flight before the leader has ended: it must not take the
/// leader's value.
#[test]
fn a_caller_begun_after_an_invalidation_does_not_take_an_older_leaders_value() {
    let mut ops = vec![Op::Step(0); 5];
    ops.extend([Op::Invalidate, Op::Step(1), Op::Step(1), Op::Step(1)]);
    run(GET_GET, &ops);
}

/// Issue 19 #9: the data changes while a caller computes from the old data (with and
/// without `lock`); a forced refresh then returns, so every later call sees its value.
#[test]
fn a_forced_refresh_is_never_followed_by_an_older_store() {
    for lock in [None, Some(true), Some(false)] {
        let setup = Setup {
            lock,
            kinds: [Kind::Get, Kind::Forced, Kind::Get],
            slots: 3,
            ..GET_GET
        };
        // The first caller has taken the lock and computes.
        let mut ops = vec![Op::Step(0); 3];
        ops.extend([Op::Bump]);
        ops.extend(vec![Op::Step(1); 8]);
        ops.extend(vec![Op::Step(0); 4]);
        ops.extend(vec![Op::Step(2); 4]);
        run(setup, &ops);
    }
}

/// Issue 19 #1: a stale value's refresh computes from the old data; the data changes
/// and a forced refresh stores the new value; the older refresh must not land over it.
#[test]
fn a_stale_refresh_never_lands_over_a_forced_one() {
    let setup = Setup {
        stale_s: 30,
        kinds: [Kind::Get, Kind::Forced, Kind::Get],
        slots: 2,
        ..GET_GET
    };
    // The first call stores (6 steps); the value goes stale; the second call returns
    // it and refreshes it, up to the start of its computation (6 steps).
    let mut ops = vec![Op::Step(0); 6];
    ops.push(Op::Tick(65));
    ops.extend(vec![Op::Step(0); 6]);
    ops.push(Op::Bump);
    ops.extend(vec![Op::Step(1); 8]);
    ops.extend(vec![Op::Step(0); 6]);
    ops.extend(vec![Op::Step(2); 4]);
    run(setup, &ops);
}
