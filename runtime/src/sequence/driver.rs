//! The two drivers of the sequence: [`Driver::perform`] runs one I/O step against a
//! blocking [`Backend`](crate::Backend), [`Driver::perform_async`] against an
//! [`AsyncBackend`](crate::AsyncBackend), and each event goes back to the machine with
//! the time it came at. Everything else (what to do next, when to give up waiting,
//! which lock and mark keys, what to store and for how long) is the machine's.
//!
//! A driver owns what outlives one step: the lock guard (armed before each attempt at
//! the lock, so a caller dropped mid-attempt gives the lock back) and this process's
//! flight for the key (a leader dropped before it lands lets a follower lead), and this
//! process's refresh claim on the key, handed with a stale value to its revalidation.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use tracing::Instrument;

use super::call::Call;
use super::machine::{
    Event, Failure, Found, Io, Life, LockSpec, Machine, Note, Recheck, Role, Step, Storing,
    Verdict, Via,
};
use crate::backend::{
    GetOrLock, Op, Part, Reply, many, many_async, wait_for_value, wait_for_value_async,
};
use crate::coalesce::{self, Following, Landed, Leader};
use crate::codec::{self, Stamp};
use crate::error::Error;
use crate::kept::Share;
use crate::large::{Reading, Writing};
use crate::lock::renew::Renewal;
use crate::lock::{DropRelease, Liveness, LockGuard, new_token};
use crate::observe::{self, Outcome, held_runtime_thread};
use crate::options::Refresh;
use crate::refresh::claim::{self, RefreshClaim};
use crate::tags::EpochsRead;

/// What the sequence decided before any computation.
pub(crate) enum Lookup<T> {
    /// A stored value (or this process's leader's): return it.
    Found(T),
    /// A stored value to return and refresh (stale, or drawn for an early refresh);
    /// no other refresh of it is in flight in this process.
    Revalidate(T, Trigger),
    /// Compute; store as said (the lock, when `Storing::Locked`, is the driver's).
    Compute(Storing),
    /// Nothing to do: a refresh that another caller made or is making (or that the
    /// backend failed); `back_off`: how long this process starts no other refresh.
    Skip { back_off: Option<Duration> },
}

/// What a refresh takes from the hit that triggered it.
#[derive(Debug)]
pub(crate) struct Trigger {
    /// The stamp of the value found: the refresh computes only while it is stored.
    pub(crate) stamp: Stamp,
    /// This process's claim on the key's refresh, kept until the refresh ends.
    pub(crate) claim: RefreshClaim,
}

/// One call's I/O state; see the module docs.
pub(crate) struct Driver<'c, 'o> {
    call: &'c Call<'o>,
    /// This call's lock token, made on its first attempt at the lock (a hit needs none).
    token: Option<String>,
    on_drop: DropRelease,
    lock: Option<LockGuard>,
    /// The liveness of the lock the store was sent under: a refused store is voided
    /// (an invalidation) or expired, and said so.
    stored_under: Option<Arc<Liveness>>,
    /// Whether the near tier answered the last I/O step (a hit then is a near hit).
    near: bool,
    leader: Option<Leader>,
    flight: Option<Following>,
    /// This process's claim on refreshing the key, once a stale hit made it.
    refresh: Option<RefreshClaim>,
    /// The life the machine gave the value being computed (its stamp).
    life: Option<Life>,
    /// How long this call waited for another caller's lock.
    waited: Duration,
    /// The lock kept alive from the computation to the store's first step (through a
    /// large value's chunk writes), then dropped: the store itself is sent without it.
    renewal: Option<Renewal>,
    /// Whether a large value's manifest heads a value the machine reads (its type and
    /// version): set by each run of a machine, so that a manifest of another type is a
    /// miss before its chunks are read.
    holds: fn(&[u8], u32, u64) -> bool,
    /// The mix of the tags' epochs this call last read (0: untagged or none read), for
    /// [`holds`](Self::holds).
    tags: u64,
    /// A batch element's: the epochs' mix its batch read with every value, which
    /// answers its first tagged read (`None`: it reads its own).
    first_epochs: Option<u64>,
}

impl<'c, 'o> Driver<'c, 'o> {
    /// A driver for a blocking caller.
    pub(crate) fn blocking(call: &'c Call<'o>) -> Self {
        Self::new(call, DropRelease::Blocking)
    }

    /// A driver for an async caller: a lock left behind by cancellation is released
    /// on a task, never by blocking the executor.
    pub(crate) fn nonblocking(call: &'c Call<'o>) -> Self {
        Self::new(call, DropRelease::Spawned)
    }

    fn new(call: &'c Call<'o>, on_drop: DropRelease) -> Self {
        Self {
            call,
            token: None,
            on_drop,
            lock: None,
            stored_under: None,
            near: false,
            leader: None,
            flight: None,
            refresh: None,
            life: None,
            waited: Duration::ZERO,
            renewal: None,
            holds: |_, _, _| true,
            tags: 0,
            first_epochs: None,
        }
    }

    /// Computes (keeping the lock alive meanwhile), then stores as the sequence says;
    /// `absent` says which of the computation's errors are a value not to cache when
    /// the call removes those (the others are failures: a panic caught by a refresh).
    pub(crate) fn compute<T: Serialize, E>(
        &mut self,
        machine: &mut Machine<'_, T>,
        compute: impl FnOnce() -> Result<T, E>,
        absent: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let (renewal, started) = self.computing();
        let output = self.compute_span().in_scope(compute);
        let encoded = self.computed(renewal, started, self.stored(&output, &absent));
        self.finish(machine, encoded);
        output
    }

    /// The async form of [`compute`](Self::compute).
    pub(crate) async fn compute_async<T: Serialize, E, Fut>(
        &mut self,
        machine: &mut Machine<'_, T>,
        compute: impl FnOnce() -> Fut,
        absent: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let (renewal, started) = self.computing();
        let output = compute().instrument(self.compute_span()).await;
        let encoded = self.computed(renewal, started, self.stored(&output, &absent));
        self.drive_async(machine, Event::Computed(encoded)).await;
        output
    }

    /// A computation starts: the lock is kept alive, followers are told.
    fn computing(&mut self) -> (Option<Renewal>, Instant) {
        let renewal = self.keep_alive();
        self.mark(None);
        (renewal, Instant::now())
    }

    /// The span a computation runs in (for whoever debugs latency).
    fn compute_span(&self) -> tracing::Span {
        tracing::debug_span!("cache_memoize.compute", function = self.call.opts.name, key = %self.call.key)
    }

    /// What of a computation's output is stored: its value, the mark of an absent
    /// value (an `Err` that `absent` takes for one, in a call that removes those), or
    /// nothing (a failure).
    fn stored<'v, T, E>(
        &self,
        output: &'v Result<T, E>,
        absent: &impl Fn(&E) -> bool,
    ) -> Stored<&'v T> {
        match output {
            Ok(value) => Stored::Value(value),
            Err(err) if self.call.marks_absent() && absent(err) => Stored::Absent,
            Err(_) => Stored::Nothing,
        }
    }

    /// Encodes what is stored with its stamp (a lock lost while computing is reported
    /// once: by the refused store, or here when nothing is stored).
    fn computed<T: Serialize>(
        &mut self,
        renewal: Option<Renewal>,
        started: Instant,
        stored: Stored<&T>,
    ) -> Option<Vec<u8>> {
        let took = started.elapsed();
        observe::computed(self.call.opts.name, &self.call.key, took);
        let value = match stored {
            Stored::Value(value) => Some(value),
            Stored::Absent => None,
            Stored::Nothing => {
                // Nothing to store: the renewal's word is the only one about the lock.
                self.call.report_renewal(renewal.as_ref());
                return None;
            }
        };
        // A lock the renewal found lost refuses the store, which says so once
        // (`finished`): one report per lost lock, not two. The renewal lives on through
        // the encoding and a large value's chunk writes (`perform`), which can outlast
        // the lock's expiry; it is dropped before the store is sent.
        let fence = self.lock.as_ref().map_or(0, LockGuard::fencing_token);
        let life = self.life.unwrap_or(Life {
            fresh: self.call.opts.expire,
            ttl: self.call.opts.expire,
            tags: (!self.call.tagged()).then_some(0),
        });
        let encoded = self.call.encode(value, took, fence, life);
        self.renewal = renewal;
        encoded
    }

    /// Runs the sequence until it has a value or must compute.
    pub(crate) fn lookup<T>(&mut self, machine: &mut Machine<'_, T>) -> Lookup<T> {
        self.drive(machine, Event::Start)
    }

    /// The async form of [`lookup`](Self::lookup).
    pub(crate) async fn lookup_async<T>(&mut self, machine: &mut Machine<'_, T>) -> Lookup<T> {
        self.drive_async(machine, Event::Start).await
    }

    /// This driver, for a batch element whose batch read its tags' epochs (mixed) with
    /// the values: its first tagged read is answered from the batch's.
    #[must_use]
    pub(crate) fn with_first_epochs(mut self, epochs: Option<u64>) -> Self {
        self.first_epochs = epochs;
        self
    }

    /// A batch element's run from its start, its first read answered with `read`
    /// (the batch's one read): it stops before its attempt at the lock, which the
    /// batch sends with the other elements' ([`Deferred`]).
    pub(crate) fn batch_lookup<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        read: Result<Option<Vec<u8>>, Error>,
    ) -> Progress<T> {
        let mut read = Some(read);
        self.run(machine, Event::Start, &mut read, Defer::LOCK)
    }

    /// A batch element's run on from `event` (the answer to its deferred step), stopping
    /// before the steps `defer` names.
    pub(crate) fn batch_resume<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        event: Event,
        defer: Defer,
    ) -> Progress<T> {
        self.run(machine, event, &mut None, defer)
    }

    /// The async form of [`batch_lookup`](Self::batch_lookup).
    pub(crate) async fn batch_lookup_async<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        read: Result<Option<Vec<u8>>, Error>,
    ) -> Progress<T> {
        let mut read = Some(read);
        self.run_async(machine, Event::Start, &mut read, Defer::LOCK)
            .await
    }

    /// The async form of [`batch_resume`](Self::batch_resume).
    pub(crate) async fn batch_resume_async<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        event: Event,
        defer: Defer,
    ) -> Progress<T> {
        self.run_async(machine, event, &mut None, defer).await
    }

    /// The async form of [`run`](Self::run).
    async fn run_async<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        mut event: Event,
        read: &mut Option<Result<Option<Vec<u8>>, Error>>,
        defer: Defer,
    ) -> Progress<T> {
        self.holds = codec::manifest_holds::<T>;
        let share = machine.share();
        loop {
            let now_ms = self.now_ms(machine);
            match machine.on(now_ms, event) {
                Step::Io(Io::Get) if read.is_some() => {
                    let first = Event::Read(first_read(read.take()));
                    event = self.expanded_async(first).await;
                }
                Step::Io(Io::GetTagged) if read.is_some() => {
                    event = match self.first_tagged(read.take()) {
                        Some(event) => self.expanded_async(event).await,
                        None => self.perform_async(Io::GetTagged).await,
                    };
                }
                Step::Io(io) => match self.deferred(&io, defer) {
                    Some(deferred) => return Progress::Deferred(deferred),
                    None => event = self.perform_async(io).await,
                },
                step => return Progress::Decided(self.ended(step, share)),
            }
        }
    }

    /// A batch element's computed `value`: encoded, and run to its store, which is
    /// deferred when it can go with the other elements' (see [`Deferred::Store`]).
    pub(crate) fn batch_computed<T: Serialize>(
        &mut self,
        machine: &mut Machine<'_, T>,
        value: &T,
    ) -> Progress<T> {
        let encoded = self.batch_encoded(value);
        self.run(machine, Event::Computed(encoded), &mut None, Defer::STORE)
    }

    /// The async form of [`batch_computed`](Self::batch_computed).
    pub(crate) async fn batch_computed_async<T: Serialize>(
        &mut self,
        machine: &mut Machine<'_, T>,
        value: &T,
    ) -> Progress<T> {
        let encoded = self.batch_encoded(value);
        self.batch_resume_async(machine, Event::Computed(encoded), Defer::STORE)
            .await
    }

    /// A batch element's computation starts (its batch's loader is about to run): the
    /// step counted for this process's followers, as a single call counts it before
    /// computing (see `coalesce`): a follower that joins while the loader runs (perhaps
    /// after an invalidation) does not take the value it returns, when not stored.
    pub(crate) fn batch_computing(&mut self) {
        self.mark(None);
    }

    /// A batch element's value, encoded to store (the loader ran for every element;
    /// its start was counted by [`batch_computing`](Self::batch_computing), not now:
    /// counted after the loader, it would hand the value to followers that joined
    /// while it ran).
    fn batch_encoded<T: Serialize>(&mut self, value: &T) -> Option<Vec<u8>> {
        let renewal = self.keep_alive();
        self.computed(renewal, Instant::now(), Stored::Value(value))
    }

    /// Runs the machine from `event` (a first `Get` answered with `read`, if given)
    /// until it decides, or stops before a step `defer` names.
    fn run<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        mut event: Event,
        read: &mut Option<Result<Option<Vec<u8>>, Error>>,
        defer: Defer,
    ) -> Progress<T> {
        self.holds = codec::manifest_holds::<T>;
        let share = machine.share();
        loop {
            let now_ms = self.now_ms(machine);
            match machine.on(now_ms, event) {
                Step::Io(Io::Get) if read.is_some() => {
                    event = self.expanded(Event::Read(first_read(read.take())));
                }
                Step::Io(Io::GetTagged) if read.is_some() => {
                    event = match self.first_tagged(read.take()) {
                        Some(event) => self.expanded(event),
                        None => self.perform(Io::GetTagged),
                    };
                }
                Step::Io(io) => match self.deferred(&io, defer) {
                    Some(deferred) => return Progress::Deferred(deferred),
                    None => event = self.perform(io),
                },
                step => return Progress::Decided(self.ended(step, share)),
            }
        }
    }

    /// A batch element's first tagged read, answered from its batch's read: the value
    /// with the epochs' mix the batch read, or the read's failure; `None` when the batch
    /// read no epochs (one was missing: the element reads its own).
    fn first_tagged(&mut self, read: Option<Result<Option<Vec<u8>>, Error>>) -> Option<Event> {
        match (read?, self.first_epochs.take()) {
            (Err(err), _) => Some(Event::ReadTagged(Err(Failure::new(err)))),
            (Ok(bytes), Some(mix)) => {
                self.tags = mix;
                Some(Event::ReadTagged(Ok((bytes, Some(mix)))))
            }
            (Ok(_), None) => None,
        }
    }

    /// A run's end: the renewal dropped (the store was sent without it), the step
    /// decided.
    fn ended<T>(&mut self, step: Step<'_, T>, share: Option<Share<T>>) -> Lookup<T> {
        if let Some(renewal) = self.renewal.take() {
            drop(renewal);
        }
        self.decided(step, share)
    }

    /// `io` as the step a batch sends or takes later, if `defer` names it: a store
    /// only when it is one step (this call holds the lock and the value is not
    /// large: a large value's chunks are written first, by its own store).
    fn deferred(&mut self, io: &Io<'_>, defer: Defer) -> Option<Deferred> {
        match *io {
            Io::GetOrLock(spec) if defer.lock => {
                Some(Deferred::Lock(spec.key.to_owned(), spec.expire))
            }
            Io::StoreAndRelease { bytes, ttl }
                if defer.store && self.lock.is_some() && self.writing(bytes, ttl).is_none() =>
            {
                // Sent with the batch's other stores, without the renewal (as a
                // store is sent).
                self.renewal = None;
                Some(Deferred::Store(bytes.to_vec(), ttl))
            }
            _ => None,
        }
    }

    /// Runs the sequence from a computation's encoded value (`None`: nothing to store)
    /// to its end: stores, releases, reports, and shares the value with followers.
    fn finish<T>(&mut self, machine: &mut Machine<'_, T>, encoded: Option<Vec<u8>>) {
        self.drive(machine, Event::Computed(encoded));
    }

    /// Feeds `event` and the events of the steps that follow, each with the time it
    /// came at, until the machine decides.
    fn drive<T>(&mut self, machine: &mut Machine<'_, T>, mut event: Event) -> Lookup<T> {
        self.holds = codec::manifest_holds::<T>;
        let share = machine.share();
        loop {
            let now_ms = self.now_ms(machine);
            // Not dropped when it is an I/O step, which owns nothing (an `Io` is
            // `Copy`): the compiler would call the `Step`'s drop glue after each one.
            let step = ManuallyDrop::new(machine.on(now_ms, event));
            if let Step::Io(io) = *step {
                event = self.perform(io);
                continue;
            }
            // Checked here: a hit holds no renewal, and drops none.
            if let Some(renewal) = self.renewal.take() {
                drop(renewal);
            }
            return self.decided(ManuallyDrop::into_inner(step), share);
        }
    }

    /// The async form of [`drive`](Self::drive).
    async fn drive_async<T>(
        &mut self,
        machine: &mut Machine<'_, T>,
        mut event: Event,
    ) -> Lookup<T> {
        self.holds = codec::manifest_holds::<T>;
        let share = machine.share();
        loop {
            let now_ms = self.now_ms(machine);
            match machine.on(now_ms, event) {
                Step::Io(io) => event = self.perform_async(io).await,
                step => {
                    // Checked here: a hit holds no renewal, and drops none.
                    if let Some(renewal) = self.renewal.take() {
                        drop(renewal);
                    }
                    return self.decided(step, share);
                }
            }
        }
    }

    /// The time now, for the machine (0 when it judges by the backend's TTL alone: the
    /// clock is not read).
    pub(crate) fn now_ms<T>(&self, machine: &Machine<'_, T>) -> u64 {
        if machine.reads_clock() {
            self.call.opts.now_ms()
        } else {
            0
        }
    }

    /// Keeps the lock alive while computing, if this call holds it.
    pub(crate) fn keep_alive(&self) -> Option<Renewal> {
        self.lock.as_ref().map(LockGuard::keep_alive)
    }

    /// The lock this call holds, handed to whoever stores under it (an iterator).
    pub(crate) fn take_lock(&mut self) -> Option<LockGuard> {
        self.lock.take()
    }

    /// The mix of the call's tags' epochs that what it computes must record (0:
    /// untagged), as the machine decided when it said to compute; `None`: an epoch
    /// was missing (an invalidation raced its read), so nothing may be stored. For
    /// whoever stores under [`take_lock`](Self::take_lock) (an iterator).
    pub(crate) fn recorded_tags(&self) -> Option<u64> {
        match self.life {
            Some(life) => life.tags,
            None => (!self.call.tagged()).then_some(0),
        }
    }

    /// Counts, for this process's followers, a step this call is about to send or a
    /// computation it is about to start (see `coalesce`); before a store, closes the
    /// flight to callers that have not joined yet.
    #[inline]
    fn mark(&mut self, io: Option<&Io<'_>>) {
        if io.is_some_and(|io| !io.proves()) {
            return;
        }
        if let Some(leader) = &self.leader {
            leader.mark();
            if matches!(io, Some(Io::StoreAndRelease { .. })) {
                leader.close();
            }
        }
    }

    /// A read's reply as the machine's event, noting whether the near tier answered.
    #[inline]
    fn read(&mut self, reply: Result<Reply, Error>, key: &str) -> Event {
        self.near = matches!(reply, Ok(Reply::Near(_)));
        Event::Read(
            reply
                .and_then(|reply| reply.into_value("get", key))
                .map_err(Failure::new),
        )
    }

    /// A decoded value the near tier kept, as the machine's event.
    fn kept(&mut self, kept: Option<crate::backend::DecodedValue>) -> Event {
        self.near = kept.is_some();
        Event::Kept(kept)
    }

    /// One I/O step, blocking: the step's [`Plan`], carried out (a large value's
    /// chunks written before its store, and read after the step that found it).
    #[inline]
    fn perform(&mut self, io: Io<'_>) -> Event {
        match io {
            Io::Get => self.get(),
            Io::GetTagged | Io::ReadTags => {
                let mut read = self.epochs_read(io);
                while let Some(op) = read.next_op() {
                    let reply = self.call.backend.execute(op);
                    read.answer(reply);
                }
                let event = self.epochs_read_event(read);
                self.expanded(event)
            }
            Io::StoreAndRelease { bytes, ttl } => self.store(bytes, ttl),
            io => self.step(io),
        }
    }

    /// The read of a tagged value with its tags' epochs (`Io::GetTagged`), or of the
    /// epochs alone (`Io::ReadTags`), as operations (see `tags::EpochsRead`).
    fn epochs_read(&mut self, io: Io<'_>) -> EpochsRead<'c> {
        self.mark(Some(&io));
        self.near = false;
        let call: &'c Call<'o> = self.call;
        let value = matches!(io, Io::GetTagged).then(|| call.key.as_str());
        let life = call.opts.expire.saturating_add(call.opts.freshness.stale);
        EpochsRead::new(value, &call.tags, life)
    }

    /// What an [`EpochsRead`] came to, as the machine's event.
    fn epochs_read_event(&mut self, read: EpochsRead<'_>) -> Event {
        let with_value = read.with_value();
        // A value and its epochs answered by the near tier: a near hit, if a hit.
        self.near = with_value && read.near();
        let read = read.finish();
        if let Err(err) = &read {
            said_failed(err);
        }
        if let Ok((_, Some(mix))) = &read {
            self.tags = *mix;
        }
        let read = read.map_err(Failure::new);
        if with_value {
            Event::ReadTagged(read)
        } else {
            Event::Tags(read.map(|(_, mix)| mix))
        }
    }

    /// The read of the value, blocking: what [`plan`](Self::plan) and
    /// [`answer`](Self::answer) make of `Io::Get`, sent without them (the one step of
    /// every hit: no plan to build and take apart).
    #[inline]
    fn get(&mut self) -> Event {
        self.mark(Some(&Io::Get));
        let key = self.call.key.as_str();
        let reply = self.call.backend.execute(Op::Get { key });
        if let Err(err) = &reply {
            said_failed(err);
        }
        let event = self.read(reply, key);
        self.expanded(event)
    }

    /// The store step: a large value's chunks first (the lock kept alive meanwhile, as
    /// while computing: writes longer than its expiry would lose it, and the store
    /// with it), then the store of its manifest, or of the value.
    #[inline(never)]
    fn store(&mut self, bytes: &[u8], ttl: Duration) -> Event {
        let renewal = self.renewal.take();
        let Some(mut writing) = self.writing(bytes, ttl) else {
            drop(renewal);
            return self.step(Io::StoreAndRelease { bytes, ttl });
        };
        let mut lost = false;
        while let Some(op) = writing.next_op() {
            if renewal.as_ref().is_some_and(Renewal::lost) {
                lost = true;
                break;
            }
            let reply = self.call.backend.execute(op);
            writing.answer(reply);
        }
        let (manifest, failed) = self.written(writing, renewal, lost);
        let event = self.step(stored_as(ttl, &manifest));
        failed_store(event, failed, lost)
    }

    /// One I/O step other than a store, blocking.
    fn step(&mut self, io: Io<'_>) -> Event {
        let call = self.call;
        let backend = &*call.backend;
        let mut io = io;
        let mut scratch = Scratch::default();
        let wait = loop {
            match self.plan(io, &mut scratch, |op| backend.execute(op)) {
                Plan::Event(event) => return event,
                Plan::Sent(reply, then) => {
                    if let Err(err) = &reply {
                        said_failed(err);
                    }
                    match then.next() {
                        Some(next) => io = next,
                        None => {
                            let event = self.answer(then, reply);
                            return self.expanded(event);
                        }
                    }
                }
                Plan::Wait(wait) => break wait,
            }
        };
        match wait {
            Wait::Leader(flight, max) => {
                let started = Instant::now();
                let landed = flight.wait(max);
                held_runtime_thread(
                    "a blocking memoized call waiting for this process's computation of its key",
                    Some(started.elapsed()),
                );
                Event::Landed(landed)
            }
            Wait::Release(lock_key, since, max) => {
                let started = Instant::now();
                let delivered =
                    wait_span(call).in_scope(|| wait_for_value(backend, lock_key, since, max));
                held_runtime_thread(
                    "a blocking memoized call waiting for another caller's computation",
                    Some(started.elapsed()),
                );
                let paused = self.paused(started, delivered);
                self.expanded(paused)
            }
        }
    }

    /// One I/O step, awaited: the step's [`Plan`], carried out (as [`perform`](Self::perform)).
    async fn perform_async(&mut self, io: Io<'_>) -> Event {
        match io {
            Io::GetTagged | Io::ReadTags => {
                let mut read = self.epochs_read(io);
                while let Some(op) = read.next_op() {
                    let reply = self.call.backend.execute_async(op).await;
                    read.answer(reply);
                }
                let event = self.epochs_read_event(read);
                self.expanded_async(event).await
            }
            Io::StoreAndRelease { bytes, ttl } => self.store_async(bytes, ttl).await,
            io => self.step_async(io).await,
        }
    }

    /// The async form of [`store`](Self::store).
    async fn store_async(&mut self, bytes: &[u8], ttl: Duration) -> Event {
        let renewal = self.renewal.take();
        let Some(mut writing) = self.writing(bytes, ttl) else {
            drop(renewal);
            return self.step_async(Io::StoreAndRelease { bytes, ttl }).await;
        };
        let mut lost = false;
        while let Some(op) = writing.next_op() {
            if renewal.as_ref().is_some_and(Renewal::lost) {
                lost = true;
                break;
            }
            let reply = self.call.backend.execute_async(op).await;
            writing.answer(reply);
        }
        let (manifest, failed) = self.written(writing, renewal, lost);
        let event = self.step_async(stored_as(ttl, &manifest)).await;
        failed_store(event, failed, lost)
    }

    /// The async form of [`step`](Self::step).
    async fn step_async(&mut self, io: Io<'_>) -> Event {
        let call = self.call;
        let backend = &*call.backend;
        let mut io = io;
        let mut scratch = Scratch::default();
        let wait = loop {
            let (sent, then) = match self.plan(io, &mut scratch, |op| backend.execute_async(op)) {
                Plan::Event(event) => return event,
                Plan::Sent(sent, then) => (sent, then),
                Plan::Wait(wait) => break wait,
            };
            let reply = sent.await;
            match then.next() {
                Some(next) => io = next,
                None => {
                    let event = self.answer(then, reply);
                    return self.expanded_async(event).await;
                }
            }
        };
        match wait {
            Wait::Leader(flight, max) => Event::Landed(flight.wait_async(max).await),
            Wait::Release(lock_key, since, max) => {
                let started = Instant::now();
                let delivered = wait_for_value_async(backend, lock_key, since, max)
                    .instrument(wait_span(call))
                    .await;
                let paused = self.paused(started, delivered);
                self.expanded_async(paused).await
            }
        }
    }

    /// A large value's chunk writes ended: the manifest to store (empty: release the
    /// lock instead) and the backend's error that ended them, if one did. A writer
    /// that found its lock `lost` stores nothing, said as voided only if the renewal
    /// found the lock gone while it could not have expired (an invalidation); else as
    /// lost (expired, or the backend failing).
    fn written(
        &mut self,
        mut writing: Writing<'_>,
        renewal: Option<Renewal>,
        lost: bool,
    ) -> (Vec<u8>, Option<Error>) {
        drop(renewal);
        let failed = writing.take_error();
        if lost {
            self.stored_under = self
                .lock
                .as_ref()
                .map(LockGuard::liveness)
                .filter(|liveness| liveness.was_voided());
            return (Vec::new(), failed);
        }
        (writing.manifest().unwrap_or_default(), failed)
    }

    /// The store of a large value, when `bytes` are one and this call holds the lock:
    /// its chunks are written first (see `large`).
    fn writing<'v>(&self, bytes: &'v [u8], ttl: Duration) -> Option<Writing<'v>>
    where
        'c: 'v,
    {
        let call: &'c Call<'o> = self.call;
        self.lock.as_ref()?;
        Writing::of(call.key.as_str(), bytes, ttl, call.opts.large_values)
    }

    /// `event` with the large value it carries read from its chunks; as it is when it
    /// carries none (or the chunks are unreadable: the manifest then reads as any
    /// unreadable value).
    #[inline]
    fn expanded(&self, event: Event) -> Event {
        // Checked inline first: a value that is not a manifest (every small value)
        // costs a few comparisons, not a call.
        if !carries_manifest(&event) {
            return event;
        }
        self.expanded_large(event)
    }

    /// [`expanded`](Self::expanded), for an event that carries a manifest.
    #[inline(never)]
    fn expanded_large(&self, mut event: Event) -> Event {
        let Some(mut reading) = carried(&mut event).and_then(|bytes| self.reading(bytes)) else {
            return event;
        };
        let backend = &*self.call.backend;
        while let Some(op) = reading.next_op() {
            let reply = backend.execute(op);
            reading.answer(reply);
        }
        read_into(event, reading)
    }

    /// The async form of [`expanded`](Self::expanded).
    async fn expanded_async(&self, mut event: Event) -> Event {
        if !carries_manifest(&event) {
            return event;
        }
        let Some(mut reading) = carried(&mut event).and_then(|bytes| self.reading(bytes)) else {
            return event;
        };
        let backend = &*self.call.backend;
        while let Some(op) = reading.next_op() {
            let reply = backend.execute_async(op).await;
            reading.answer(reply);
        }
        read_into(event, reading)
    }

    #[inline]
    fn reading(&self, bytes: &[u8]) -> Option<Reading> {
        if !(self.holds)(bytes, self.call.opts.version, self.tags) {
            return None;
        }
        Reading::of(self.call.key.as_str(), bytes)
    }

    /// What `io` comes to, the same for both drivers: its event, when no backend
    /// operation is needed (a local action: joining the flight, claiming the refresh,
    /// the decoded tier, which never blocks); or the operation, handed to `send` (the
    /// driver's `execute` or `execute_async`), and how its reply is read; or one of the
    /// two waits. The lock a store or release is sent under stays armed until its reply
    /// is read ([`answer`](Self::answer)): a caller dropped before then gives the lock
    /// back.
    #[inline]
    fn plan<'a, 'k: 'a, S>(
        &'a mut self,
        io: Io<'k>,
        scratch: &'a mut Scratch<'k>,
        send: impl FnOnce(Op<'a>) -> S,
    ) -> Plan<'a, S>
    where
        'c: 'k,
    {
        self.mark(Some(&io));
        self.near = false;
        let call = self.call;
        let key = call.key.as_str();
        let (codec, version) = (call.opts.codec, call.opts.version);
        match io {
            Io::Get => Plan::Sent(send(Op::Get { key }), Then::Read),
            // Sent by `perform` as several operations, never planned as one.
            Io::GetTagged | Io::ReadTags => Plan::Event(Event::Tags(Ok(None))),
            Io::GetKept(accepts) => Plan::Event(
                self.kept(
                    call.backend
                        .decoded(key, &|kept| accepts(kept, codec, version)),
                ),
            ),
            Io::Join => Plan::Event(Event::Joined(self.join())),
            Io::ClaimRefresh => Plan::Event(Event::Claimed(self.claim_refresh())),
            Io::AwaitLeader { max } => match self.flight.take() {
                Some(flight) => Plan::Wait(Wait::Leader(flight, max)),
                None => Plan::Event(Event::Landed(Landed::Abandoned)),
            },
            Io::GetOrLock(spec) => {
                let at = Instant::now();
                let lock = self.arm(spec).claim();
                Plan::Sent(send(Op::GetOrLock { key, lock }), Then::Found(at))
            }
            Io::TakeLock(spec) => {
                let at = Instant::now();
                let lock = self.arm(spec).claim();
                Plan::Sent(send(Op::TakeLock { lock }), Then::Taken(at))
            }
            Io::Pause {
                lock_key,
                since,
                max,
            } => Plan::Wait(Wait::Release(lock_key, since, max)),
            Io::StoreAndRelease { bytes, ttl } => match &self.lock {
                Some(lock) => {
                    self.stored_under = Some(lock.liveness());
                    Plan::Sent(send(lock.store_op(key, bytes, ttl)), Then::Stored)
                }
                None => Plan::Event(Event::Stored(Ok(false))),
            },
            Io::Release => match &self.lock {
                Some(lock) => Plan::Sent(send(lock.release_op()), Then::Released),
                None => Plan::Event(Event::Stored(Ok(false))),
            },
            Io::Recheck { mark_key } => {
                let keys = scratch.keys.insert([key, mark_key]);
                Plan::Sent(send(Op::GetMany { keys }), Then::Rechecked)
            }
            Io::Throttle {
                mark_key,
                ttl,
                mark,
            } => {
                let value = scratch.mark.insert(mark.to_bytes());
                Plan::Sent(
                    send(Op::Set {
                        key: mark_key,
                        value,
                        ttl,
                    }),
                    Then::Marked,
                )
            }
        }
    }

    /// The reply to a planned operation as the machine's event (see [`Then::next`]
    /// for one that is not).
    #[inline]
    fn answer(&mut self, then: Then, reply: Result<Reply, Error>) -> Event {
        let key = self.call.key.as_str();
        match then {
            Then::Read => self.read(reply, key),
            Then::Found(at) => {
                let watched = match &reply {
                    Ok(Reply::Watched { expires_in }) => Some(*expires_in),
                    _ => None,
                };
                let found = reply.and_then(|reply| reply.into_found("get_or_lock", key));
                self.settle(at, found, watched)
            }
            Then::Taken(at) => {
                let lock_key = self.lock.as_ref().map_or(key, LockGuard::key);
                let fence = reply.and_then(|reply| reply.into_fence("take_lock", lock_key));
                self.settle(at, fence.map(taken), None)
            }
            Then::Stored => Event::Stored(
                self.lock
                    .take()
                    .map_or(Ok(false), |lock| lock.stored(key, reply))
                    .map_err(Failure::new),
            ),
            Then::Released => Event::Stored(
                self.lock
                    .take()
                    .map_or(Ok(false), |lock| lock.released(reply))
                    .map_err(Failure::new),
            ),
            Then::Rechecked => Event::Rechecked(
                reply
                    .and_then(|reply| reply.into_values("get_many", key))
                    .map(Recheck::of)
                    .map_err(Failure::new),
            ),
            // Never answered: the release follows (`Then::next`).
            Then::Marked => Event::Stored(Ok(false)),
        }
    }

    /// A wait for another caller's lock that began at `started` has ended.
    fn paused(&mut self, started: Instant, delivered: Option<Vec<u8>>) -> Event {
        self.waited += started.elapsed();
        Event::Paused(delivered)
    }
    fn join(&mut self) -> Role {
        match coalesce::join(&self.call.flight_key()) {
            coalesce::Role::Lead(leader) => {
                self.leader = Some(leader);
                Role::Lead
            }
            coalesce::Role::Follow(flight) => {
                self.flight = Some(flight);
                Role::Follow
            }
        }
    }

    fn claim_refresh(&mut self) -> bool {
        self.refresh = claim::claim(&self.call.flight_key(), Instant::now());
        self.refresh.is_some()
    }

    /// Arms a guard for the lock the machine named before an attempt at it; returns it
    /// for the claim.
    fn arm(&mut self, spec: LockSpec<'_>) -> &LockGuard {
        let token = self.token.get_or_insert_with(new_token).clone();
        self.lock.insert(LockGuard::armed(
            self.call.backend.to_arc(),
            spec.key.to_owned(),
            self.call.key.to_string(),
            token,
            spec.expire,
            self.on_drop,
        ))
    }

    /// Keeps the armed guard only if the attempt took the lock. A failed attempt's
    /// guard is disarmed too: a broken backend is not asked again to release.
    ///
    /// A failed attempt is reported at the time it failed, not when it began: a
    /// waiter riding out errors judges its timeout by it, and an attempt that began
    /// within the timeout may fail a response timeout later, past it.
    fn settle(
        &mut self,
        at: Instant,
        found: Result<GetOrLock, Error>,
        watched: Option<Duration>,
    ) -> Event {
        let at = if found.is_err() { Instant::now() } else { at };
        match (&found, self.lock.as_mut()) {
            (Ok(GetOrLock::Locked { fence }), Some(lock)) => lock.taken_with(*fence),
            _ => {
                if let Some(lock) = self.lock.take() {
                    lock.disarm();
                }
            }
        }
        Event::Attempted {
            at,
            found: found.map_err(Failure::new),
            watched,
        }
    }

    fn decided<T>(&mut self, step: Step<'_, T>, share: Option<Share<T>>) -> Lookup<T> {
        match step {
            Step::Hit(Found {
                value,
                bytes,
                verdict,
                via,
                stamp,
                keep,
            }) => {
                if let (true, Some(share), Some(bytes)) = (keep, share, &bytes) {
                    let (key, opts) = (self.call.key.as_str(), self.call.opts);
                    let make = &mut || share.keep(&value, stamp, opts.codec, opts.version);
                    self.call.backend.keep_decoded(key, bytes, make);
                }
                self.land(bytes);
                if self.near {
                    observe::near_hit(self.call.opts.name);
                }
                self.observe(match (verdict, via) {
                    (Verdict::Stale | Verdict::Early | Verdict::Underway, _) => {
                        Outcome::StaleServed
                    }
                    (Verdict::Fresh, Via::Read) => Outcome::Hit,
                    (Verdict::Fresh, Via::Wait) => Outcome::Waited,
                    (Verdict::Fresh, Via::Leader) => Outcome::Coalesced,
                });
                match (verdict, self.refresh.take()) {
                    (Verdict::Stale | Verdict::Early, Some(claim)) => {
                        Lookup::Revalidate(value, Trigger { stamp, claim })
                    }
                    _ => Lookup::Found(value),
                }
            }
            Step::Compute { store, note, life } => {
                self.life = Some(life);
                self.observe(match (&note, self.call.refresh) {
                    (Some(Note::FailOpen(_)), _) => Outcome::FailOpen,
                    (Some(Note::LockTimeout { .. } | Note::LockBusy), _) => Outcome::LockTimeout,
                    (_, Refresh::Revalidate) => Outcome::RefreshStarted,
                    _ => Outcome::Miss,
                });
                self.call.report(note);
                Lookup::Compute(store)
            }
            Step::Skip { note, back_off } => {
                self.call.report(note);
                Lookup::Skip { back_off }
            }
            // The end of a computation's store (`finish`); were it reached before
            // one, computing without the cache is the safe answer.
            step @ Step::Finished { .. } => {
                self.finished(step);
                Lookup::Compute(Storing::Nothing)
            }
            Step::Io(_) => Lookup::Compute(Storing::Nothing),
        }
    }

    fn finished<T>(&mut self, step: Step<'_, T>) {
        if let Step::Finished { note, landing } = step {
            match note {
                Some(Note::LockLost) => {
                    let voided = self.stored_under.as_ref().is_some_and(|l| l.voided_now());
                    observe::lock_lost(self.call.opts.name, &self.call.key, voided, "value");
                }
                note => self.call.report(note),
            }
            self.land(landing);
        }
    }

    /// Records what the lookup came to (and the backend's health, when it answered).
    #[inline]
    fn observe(&self, outcome: Outcome) {
        let function = self.call.opts.name;
        observe::record(function, &self.call.key, outcome);
        if outcome != Outcome::FailOpen {
            observe::backend_answered(self.call.backend_id());
        }
        if !self.waited.is_zero() {
            observe::waited(function, self.waited);
        }
    }

    /// Shares `bytes` with this process's followers, if this call leads them.
    #[inline]
    fn land(&mut self, bytes: Option<Vec<u8>>) {
        // Checked first: a call that leads no flight (every hit) only drops the bytes.
        let Some(leader) = self.leader.take() else {
            return;
        };
        if let Some(bytes) = bytes {
            leader.land(bytes.into());
        }
    }
}

/// What of a computation's output is stored.
#[derive(Clone, Copy)]
enum Stored<V> {
    /// Its value.
    Value(V),
    /// The mark of an absent value (see `Call::absent`).
    Absent,
    /// Nothing: it failed.
    Nothing,
}

/// What one I/O step comes to (see [`Driver::plan`]); `S`: what sending an operation
/// returned (its reply, or the future of it).
enum Plan<'a, S> {
    /// Its event, known without the backend.
    Event(Event),
    /// An operation sent, and how its reply is read.
    Sent(S, Then),
    /// One of the two waits.
    Wait(Wait<'a>),
}

/// The waits, the only steps whose form differs between the drivers beyond sending.
enum Wait<'a> {
    /// For this process's leader, at most this long.
    Leader(Following, Option<Duration>),
    /// Until the lock at this key may have been released since then, at most this
    /// long (in the wait span, counted in `waited`).
    Release(&'a str, Instant, Duration),
}

/// How a planned operation's reply is read (see [`Driver::answer`]).
#[derive(Clone, Copy)]
enum Then {
    /// A read of the value: [`Event::Read`], noting whether the near tier answered.
    Read,
    /// A get-or-lock that began then: [`Event::Attempted`].
    Found(Instant),
    /// A take-lock that began then (answered with a fencing token): [`Event::Attempted`].
    Taken(Instant),
    /// The store under the lock, which releases it: [`Event::Stored`].
    Stored,
    /// The lock's release: [`Event::Stored`].
    Released,
    /// The value and the throttle mark, read again: [`Event::Rechecked`].
    Rechecked,
    /// The throttle mark left (best effort): the lock is released next.
    Marked,
}

impl Then {
    /// The step that follows the reply, before the machine hears of it: a throttle
    /// mark's is not read (best effort: without the mark, the fleet retries sooner),
    /// the lock is released next.
    fn next(self) -> Option<Io<'static>> {
        match self {
            Self::Marked => Some(Io::Release),
            _ => None,
        }
    }
}

/// What a planned operation borrows that neither the call nor the machine holds.
#[derive(Default)]
struct Scratch<'k> {
    /// A recheck's keys: the value's and the throttle mark's.
    keys: Option<[&'k str; 2]>,
    /// A throttle mark's bytes.
    mark: Option<[u8; 16]>,
}

/// The span a wait for another caller's lock runs in.
fn wait_span(call: &Call<'_>) -> tracing::Span {
    tracing::debug_span!("cache_memoize.wait_for_lock", function = call.opts.name, key = %call.key)
}

#[cfg(test)]
mod model;

/// A lock attempt's answer as a get-or-lock's.
fn taken(fence: Option<u64>) -> GetOrLock {
    match fence {
        Some(fence) => GetOrLock::Locked { fence },
        None => GetOrLock::Held,
    }
}

/// The store of a large value's `manifest` for `ttl`; a release when the chunks were
/// not all written (an empty `manifest`): nothing is stored.
fn stored_as(ttl: Duration, manifest: &[u8]) -> Io<'_> {
    if manifest.is_empty() {
        Io::Release
    } else {
        Io::StoreAndRelease {
            bytes: manifest,
            ttl,
        }
    }
}

/// The value bytes `event` carries, if any: a read, an attempt that found a value, a
/// value a release delivered, a recheck's value.
#[inline]
fn carried(event: &mut Event) -> Option<&mut Vec<u8>> {
    match event {
        Event::Read(Ok(Some(bytes)))
        | Event::Attempted {
            found: Ok(GetOrLock::Value(bytes)),
            ..
        }
        | Event::Paused(Some(bytes))
        | Event::Rechecked(Ok(Recheck {
            value: Some(bytes), ..
        })) => Some(bytes),
        _ => None,
    }
}

/// Whether `event` carries a large value's manifest (by its format byte alone; the
/// manifest is checked when read).
#[inline]
fn carries_manifest(event: &Event) -> bool {
    match event {
        Event::Read(Ok(Some(bytes)))
        | Event::Attempted {
            found: Ok(GetOrLock::Value(bytes)),
            ..
        }
        | Event::Paused(Some(bytes))
        | Event::Rechecked(Ok(Recheck {
            value: Some(bytes), ..
        })) => crate::codec::is_manifest(bytes),
        _ => false,
    }
}

/// `event` with the value `reading` read in place of its manifest (left as it is when
/// the read failed).
fn read_into(mut event: Event, reading: Reading) -> Event {
    if let (Some(value), Some(bytes)) = (reading.value(), carried(&mut event)) {
        *bytes = value;
    }
    event
}

/// The first read of a call whose read was sent before its sequence began (a batch's).
fn first_read(read: Option<Result<Option<Vec<u8>>, Error>>) -> Result<Option<Vec<u8>>, Failure> {
    read.unwrap_or(Ok(None)).map_err(Failure::new)
}

/// A blocking step's backend failure: a timeout held the thread for the response
/// timeout, said once if that thread is inside a Tokio runtime (a refused connection or
/// a skipped backend held nothing).
#[cold]
fn said_failed(err: &Error) {
    if err.is_timeout() {
        held_runtime_thread("a blocking memoized call", None);
    }
}

/// The end of a store step whose chunk writes `failed`, or stopped when the renewal
/// found the lock `lost` (gone, or the backend failing it), the lock released in its
/// place: a failed store, or a store refused for a lost lock, said as one (a release
/// that found the lock still ours is no store).
fn failed_store(event: Event, failed: Option<Error>, lost: bool) -> Event {
    match (event, failed) {
        (Event::Stored(Ok(_)), Some(err)) => Event::Stored(Err(Failure::new(err))),
        (Event::Stored(Ok(_)), None) if lost => Event::Stored(Ok(false)),
        (event, _) => event,
    }
}

#[cfg(test)]
mod direct_read;

/// Which steps a batch element's run stops before (see [`Deferred`]).
#[derive(Clone, Copy)]
pub(crate) struct Defer {
    /// The attempt at the lock (`Io::GetOrLock`).
    pub(crate) lock: bool,
    /// The store under the lock (of a value that is not large).
    pub(crate) store: bool,
}

impl Defer {
    /// Nothing: the run goes on until the machine decides.
    pub(crate) const NOTHING: Self = Self {
        lock: false,
        store: false,
    };
    /// A lookup's, and a waiting element's once its wait ended: the attempt at the
    /// lock, sent with the other elements' (a wait for this process's leader, or for
    /// another caller's lock, is taken at once, in the order of the keys).
    pub(crate) const LOCK: Self = Self {
        lock: true,
        store: false,
    };
    /// A computed element's: its store.
    pub(crate) const STORE: Self = Self {
        lock: false,
        store: true,
    };
}

/// How far a batch element's run went.
pub(crate) enum Progress<T> {
    /// The machine decided.
    Decided(Lookup<T>),
    /// It stopped before this step, which the batch sends (with other elements') or
    /// takes later.
    Deferred(Deferred),
}

/// A step a batch element's run stopped before (owned: the machine's borrow ends).
pub(crate) enum Deferred {
    /// An attempt at the lock at this key, with this expiry (`Io::GetOrLock`): sent in
    /// the batch's `Op::Many`.
    Lock(String, Duration),
    /// The store of these bytes for this TTL under the lock (`Io::StoreAndRelease`):
    /// sent in the batch's `Op::Many`.
    Store(Vec<u8>, Duration),
}

impl Deferred {
    /// The machine's step again.
    fn io(&self) -> Io<'_> {
        match self {
            Self::Lock(key, expire) => Io::GetOrLock(LockSpec {
                key,
                expire: *expire,
            }),
            Self::Store(bytes, ttl) => Io::StoreAndRelease { bytes, ttl: *ttl },
        }
    }
}

/// What planning a deferred step came to: an operation to send in the batch's
/// composite, or an event known without the backend.
enum Planned<'a> {
    Part(Part<'a>, Then),
    Event(Event),
    /// Not a part (never: a deferred step plans as one).
    Other(Then),
}

/// How an element's event comes from the batch's composite.
enum Slot {
    /// Known without the backend.
    Event(Event),
    /// Its part's reply, read so.
    Part(Then),
    /// Nothing was sent for it (never: see [`Planned::Other`]).
    Unsent(Then),
}

impl<'c> Driver<'c, '_> {
    /// Plans a deferred lock attempt or store as a part of the batch's composite.
    fn plan_part<'a, 'k: 'a>(
        &'a mut self,
        deferred: &'k Deferred,
        scratch: &'a mut Scratch<'k>,
    ) -> Planned<'a>
    where
        'c: 'k,
    {
        match self.plan(deferred.io(), scratch, |op| op) {
            Plan::Sent(op, then) => match Part::of(op) {
                Ok(part) => Planned::Part(part, then),
                Err(_) => Planned::Other(then),
            },
            Plan::Event(event) => Planned::Event(event),
            Plan::Wait(_) => Planned::Event(Event::Stored(Ok(false))),
        }
    }

    /// The element's event from the composite's `replies` (taking its part's), before
    /// a large value found is read from its chunks; `None` for a lock attempt not made
    /// (its guard, armed for it, disarmed: there is nothing to give back).
    fn answer_slot(
        &mut self,
        slot: Slot,
        replies: &mut impl Iterator<Item = Result<Reply, Error>>,
    ) -> Option<Event> {
        let (then, reply) = match slot {
            Slot::Event(event) => return Some(event),
            Slot::Part(then) => {
                let reply = replies.next();
                let key = self.call.key.as_str();
                (
                    then,
                    reply.unwrap_or_else(|| Err(Error::backend("many", key, "no reply"))),
                )
            }
            Slot::Unsent(then) => {
                let key = self.call.key.as_str();
                (then, Err(Error::backend("many", key, "not a part of it")))
            }
        };
        if matches!((then, &reply), (Then::Found(_), Ok(Reply::Done))) {
            if let Some(lock) = self.lock.take() {
                lock.disarm();
            }
            return None;
        }
        if let Err(err) = &reply {
            said_failed(err);
        }
        Some(self.answer(then, reply))
    }
}

/// The parts of the batch's deferred steps (each planned by its element's driver),
/// and how each element's event comes.
fn plan_parts<'a, 'm, 'd, 'c: 'd, 'o>(
    batch: &'a mut [(&'m mut Driver<'c, 'o>, &'d Deferred)],
    scratch: &'a mut [Scratch<'d>],
) -> (Vec<Part<'a>>, Vec<Slot>) {
    let mut parts = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    for ((driver, deferred), scratch) in batch.iter_mut().zip(scratch.iter_mut()) {
        slots.push(match driver.plan_part(deferred, scratch) {
            Planned::Part(part, then) => {
                parts.push(part);
                Slot::Part(then)
            }
            Planned::Event(event) => Slot::Event(event),
            Planned::Other(then) => Slot::Unsent(then),
        });
    }
    (parts, slots)
}

/// Sends the deferred lock attempts and stores of `batch` (each element's driver and
/// step) as one `Op::Many` (one script on Redis; one by one on a backend without it):
/// each element's event, in order, values found read from their chunks when large;
/// `None` for a lock attempt not made (after one that found its lock held: the
/// element's step stays deferred, for the batch's next attempt).
pub(crate) fn send_many<'c: 'd, 'd>(
    batch: &mut [(&mut Driver<'c, '_>, &'d Deferred)],
) -> Vec<Option<Event>> {
    let Some((first, _)) = batch.first() else {
        return Vec::new();
    };
    let call = first.call;
    let mut scratch: Vec<Scratch<'_>> = batch.iter().map(|_| Scratch::default()).collect();
    let (parts, slots) = plan_parts(batch, &mut scratch);
    let mut replies = many(&*call.backend, &parts).into_iter();
    drop(parts);
    let answered = batch.iter_mut().zip(slots);
    answered
        .map(|((driver, _), slot)| {
            let event = driver.answer_slot(slot, &mut replies)?;
            Some(driver.expanded(event))
        })
        .collect()
}

/// The async form of [`send_many`].
pub(crate) async fn send_many_async<'c: 'd, 'd>(
    batch: &mut [(&mut Driver<'c, '_>, &'d Deferred)],
) -> Vec<Option<Event>> {
    let Some((first, _)) = batch.first() else {
        return Vec::new();
    };
    let call = first.call;
    let mut scratch: Vec<Scratch<'_>> = batch.iter().map(|_| Scratch::default()).collect();
    let (parts, slots) = plan_parts(batch, &mut scratch);
    let mut replies = many_async(&*call.backend, &parts).await.into_iter();
    drop(parts);
    let mut events = Vec::with_capacity(slots.len());
    for ((driver, _), slot) in batch.iter_mut().zip(slots) {
        events.push(match driver.answer_slot(slot, &mut replies) {
            Some(event) => Some(driver.expanded_async(event).await),
            None => None,
        });
    }
    events
}
