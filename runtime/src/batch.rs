//! Batch memoization: many keys, one read, one call of the loader for the keys this
//! caller holds.
//!
//! A batch runs each element's own sequence (the same machine and driver as a
//! [`memoize`](crate::memoize) call, so every rule of a key holds per element: its
//! lock, fencing, in-process flights, waits for another process's computation,
//! invalidation, large values), with these differences:
//!
//! - **One read.** The batch reads every key with one `get_many` (one `MGET`; on a
//!   cluster, the client splits it per slot) and answers each element's first read with
//!   its part of it. A read that fails fails every element open, as a single call's
//!   failed read does (computed, in the one loader call, and not stored).
//! - **One computation.** Each element that must be computed stops before computing,
//!   holding its key's lock; the loader is called once with exactly those elements, and
//!   each element's sequence then stores what the loader returned for it. An element the
//!   loader does not return is stored as `None` (a known absence, read back as one) and
//!   left out of the returned map.
//! - **One step for the locks, one for the stores.** The driver stops each element's
//!   sequence before its attempt at the lock and before its store (`Deferred`); the
//!   batch sends them as one `Op::Many` (one script on Redis), and answers each
//!   element's machine with its part of the reply: the machine still decides every
//!   step of every element. A large value writes its chunks and stores on its own.
//!
//! - **Stale elements are refreshed in the batch.** Under `stale` (or `beta`), an
//!   element found stale (or drawn for an early refresh) is revalidated as a call with
//!   `refresh = "inline"` would: its refresh takes the key's lock if no one else is
//!   refreshing it, and joins the elements passed to the one loader call; the batch then
//!   returns the new value. One that another caller is refreshing is served stale.
//!
//! Locks are attempted in the order of the keys and the backend takes none after one
//! it finds held (`Op::Many`'s rule): the batch waits for that element (the locks it
//! took kept alive), then attempts it and the rest again. A batch never holds a lock
//! later in the order than one it waits for, so overlapping batches (in one process
//! or in several) cannot wait on each other. An element this process's other caller
//! is computing (its flight) is waited for during the lookups, in the order of the
//! keys, before the batch takes any lock. Values of a batch are stored as
//! `Option<T>`: a single-key call of the same key with `T` reads them as another type
//! (a miss).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::time::Instant;

use crate::codec::Stamp;
use crate::error::Error;
use crate::key::{CacheKey, make_cache_key};
use crate::lock::renew::Renewal;
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::claim::RefreshClaim;
use crate::refresh::scope::take_forced;
use crate::sequence::{
    Call, Defer, Deferred, Driver, Lookup, Machine, Progress, Trigger, send_many, send_many_async,
};

/// Returns the values memoized at each of `keys` (pairs of a cache key and the element
/// it stands for), computing the missing ones with **one** call of `load`, given
/// exactly the elements this caller computes; elements another caller (thread or
/// process) is computing are waited for and read, never computed twice.
///
/// All-hit batches cost one command (`MGET`); a batch with misses two more on one
/// server (one script attempts every missed element's lock, one stores every
/// computed element), and another attempt script after each element it finds held and
/// waits for. An element `load` does not return is stored as an absence and
/// is not in the returned map. With a lock (`MemoizeOptions::lock`), elements are
/// computed once across the fleet, as with `memoize`. Duplicate keys are looked up once:
/// the first element named for a key is the one passed to `load` and the one in the
/// returned map (another element named for the same key is not in it).
///
/// ```
/// use std::collections::HashMap;
/// use cache_memoize::{MemoizeOptions, memoize_many};
///
/// let opts = MemoizeOptions::new();
/// let names = |ids: &[u32]| -> HashMap<u32, String> {
///     ids.iter().filter(|id| **id != 0).map(|id| (*id, format!("user {id}"))).collect()
/// };
/// let keys = |ids: &[u32]| ids.iter().map(|id| (format!("user:{id}"), *id)).collect::<Vec<_>>();
/// let first = memoize_many(keys(&[1, 2, 0]), &opts, names);
/// assert_eq!(first.len(), 2);
/// // All three are stored now (0 as an absence): the loader is not called again.
/// let again = memoize_many(keys(&[0, 1, 2]), &opts, |_: &[u32]| unreachable!());
/// assert_eq!(again, first);
/// ```
pub fn memoize_many<K, T, S, F>(
    keys: impl IntoIterator<Item = (S, K)>,
    opts: &MemoizeOptions,
    load: F,
) -> HashMap<K, T>
where
    S: AsRef<str>,
    K: Eq + Hash + Clone,
    T: Serialize + DeserializeOwned,
    F: FnOnce(&[K]) -> HashMap<K, T>,
{
    let untagged = keys
        .into_iter()
        .map(|(key, element)| (key, Vec::new(), element));
    memoize_many_tagged(untagged, opts, load)
}

/// [`memoize_many`] with tags of each element's own (`(key, tags, element)`), before
/// the options' tags (`MemoizeOptions::tags`, shared by every element): each element's
/// value is read and written under its own tags' epochs, so invalidating one of them
/// makes its elements misses (the attribute's per-element tag templates).
pub(crate) fn memoize_many_tagged<K, T, S, F>(
    keys: impl IntoIterator<Item = (S, Vec<String>, K)>,
    opts: &MemoizeOptions,
    load: F,
) -> HashMap<K, T>
where
    S: AsRef<str>,
    K: Eq + Hash + Clone,
    T: Serialize + DeserializeOwned,
    F: FnOnce(&[K]) -> HashMap<K, T>,
{
    let refresh = Refresh::of(opts, take_forced());
    let (calls, elements) = calls(keys, opts, refresh);
    let (mut reads, epochs) = first_read(&calls);
    let mut batch = Outcomes::with_capacity(elements.len());
    let mut pending = Vec::new();
    let mut locking = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let mut machine = call.machine(true, None);
        let mut driver = Driver::blocking(call).with_first_epochs(epochs[index]);
        let read = part(&mut reads, call, index);
        match driver.batch_lookup(&mut machine, read) {
            // A hit (every element of an all-hit batch): nothing more to run.
            Progress::Decided(Lookup::Found(value)) => batch.found[index] = value,
            progress => {
                let element = Element::new(index, machine, driver);
                batch.progressed(element, progress, &mut locking, &mut pending);
            }
        }
    }
    // The attempts at every lock the lookups stopped before, as one step, in the order
    // of the keys; the backend stops taking locks at the first one held, which is
    // waited for (the locks taken kept alive meanwhile) before the next attempt at
    // it and the rest.
    while !locking.is_empty() {
        let events = send_many(&mut sent(&mut locking));
        let mut next = Vec::new();
        for (mut element, event) in locking.into_iter().zip(events) {
            let Some(event) = event else {
                next.push(element);
                continue;
            };
            let progress = element
                .driver
                .batch_resume(&mut element.machine, event, Defer::LOCK);
            batch.progressed(element, progress, &mut next, &mut pending);
        }
        locking = next;
    }
    let refreshes = batch.refreshes(&calls);
    let mut revalidating = Vec::new();
    for (index, call, stamp) in &refreshes {
        let machine = call.machine::<Option<T>>(false, None).revalidating(*stamp);
        let mut element = Element::new(*index, machine, Driver::blocking(call));
        let lookup = element.driver.lookup(&mut element.machine);
        if batch.revalidated(*index, lookup) {
            element.renewal = element.driver.keep_alive();
            revalidating.push(element);
        }
    }
    if pending.is_empty() && revalidating.is_empty() {
        return batch.values(elements);
    }
    let held: Vec<K> = pending
        .iter()
        .chain(&revalidating)
        .map(|element| elements[element.index].clone())
        .collect();
    // Each computation's start counted before the loader runs (see `batch_computing`).
    for element in pending.iter_mut().chain(revalidating.iter_mut()) {
        element.driver.batch_computing();
    }
    let mut loaded = load(&held);
    // Each element encoded and run to its store; the stores sent as one step.
    let mut storing = Vec::new();
    for mut element in pending.into_iter().chain(revalidating) {
        element.renewal = None;
        let value = loaded.remove(&elements[element.index]);
        let progress = element.driver.batch_computed(&mut element.machine, &value);
        batch.computed(element.index, value);
        if let Progress::Deferred(deferred) = progress {
            element.deferred = Some(deferred);
            storing.push(element);
        }
    }
    let events = send_many(&mut sent(&mut storing));
    for (mut element, event) in storing.into_iter().zip(events) {
        // (A store is always sent.)
        let Some(event) = event else { continue };
        let _ = element
            .driver
            .batch_resume(&mut element.machine, event, Defer::NOTHING);
    }
    batch.values(elements)
}

/// The async form of [`memoize_many`]: `load` is given the elements it computes as a
/// `Vec`, and awaited; waits do not block the executor.
pub async fn memoize_many_async<K, T, S, F, Fut>(
    keys: impl IntoIterator<Item = (S, K)>,
    opts: &MemoizeOptions,
    load: F,
) -> HashMap<K, T>
where
    S: AsRef<str>,
    K: Eq + Hash + Clone,
    T: Serialize + DeserializeOwned,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = HashMap<K, T>>,
{
    let untagged = keys
        .into_iter()
        .map(|(key, element)| (key, Vec::new(), element));
    memoize_many_tagged_async(untagged, opts, load).await
}

/// The async form of [`memoize_many_tagged`].
pub(crate) async fn memoize_many_tagged_async<K, T, S, F, Fut>(
    keys: impl IntoIterator<Item = (S, Vec<String>, K)>,
    opts: &MemoizeOptions,
    load: F,
) -> HashMap<K, T>
where
    S: AsRef<str>,
    K: Eq + Hash + Clone,
    T: Serialize + DeserializeOwned,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = HashMap<K, T>>,
{
    let refresh = Refresh::of(opts, take_forced());
    let (calls, elements) = calls(keys, opts, refresh);
    let (mut reads, epochs) = first_read_async(&calls).await;
    let mut batch = Outcomes::with_capacity(elements.len());
    let mut pending = Vec::new();
    let mut locking = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let mut machine = call.machine(true, None);
        let mut driver = Driver::nonblocking(call).with_first_epochs(epochs[index]);
        let read = part(&mut reads, call, index);
        match driver.batch_lookup_async(&mut machine, read).await {
            Progress::Decided(Lookup::Found(value)) => batch.found[index] = value,
            progress => {
                let element = Element::new(index, machine, driver);
                batch.progressed(element, progress, &mut locking, &mut pending);
            }
        }
    }
    while !locking.is_empty() {
        let events = send_many_async(&mut sent(&mut locking)).await;
        let mut next = Vec::new();
        for (mut element, event) in locking.into_iter().zip(events) {
            let Some(event) = event else {
                next.push(element);
                continue;
            };
            let progress = element
                .driver
                .batch_resume_async(&mut element.machine, event, Defer::LOCK)
                .await;
            batch.progressed(element, progress, &mut next, &mut pending);
        }
        locking = next;
    }
    let refreshes = batch.refreshes(&calls);
    let mut revalidating = Vec::new();
    for (index, call, stamp) in &refreshes {
        let machine = call.machine::<Option<T>>(false, None).revalidating(*stamp);
        let mut element = Element::new(*index, machine, Driver::nonblocking(call));
        let lookup = element.driver.lookup_async(&mut element.machine).await;
        if batch.revalidated(*index, lookup) {
            element.renewal = element.driver.keep_alive();
            revalidating.push(element);
        }
    }
    if pending.is_empty() && revalidating.is_empty() {
        return batch.values(elements);
    }
    let held: Vec<K> = pending
        .iter()
        .chain(&revalidating)
        .map(|element| elements[element.index].clone())
        .collect();
    // Each computation's start counted before the loader runs (see `batch_computing`).
    for element in pending.iter_mut().chain(revalidating.iter_mut()) {
        element.driver.batch_computing();
    }
    let mut loaded = load(held).await;
    let mut storing = Vec::new();
    for mut element in pending.into_iter().chain(revalidating) {
        element.renewal = None;
        let value = loaded.remove(&elements[element.index]);
        let progress = element
            .driver
            .batch_computed_async(&mut element.machine, &value)
            .await;
        batch.computed(element.index, value);
        if let Progress::Deferred(deferred) = progress {
            element.deferred = Some(deferred);
            storing.push(element);
        }
    }
    let events = send_many_async(&mut sent(&mut storing)).await;
    for (mut element, event) in storing.into_iter().zip(events) {
        // (A store is always sent.)
        let Some(event) = event else { continue };
        let _ = element
            .driver
            .batch_resume_async(&mut element.machine, event, Defer::NOTHING)
            .await;
    }
    batch.values(elements)
}

/// An element of a batch still running: its machine and driver, the step it stopped
/// before, and the renewal of the lock it computes under (kept alive from the moment
/// it is taken: the batch's waits and its loader may outlast the lock's expiry).
struct Element<'c, 'o, T> {
    index: usize,
    machine: Machine<'c, Option<T>>,
    driver: Driver<'c, 'o>,
    deferred: Option<Deferred>,
    renewal: Option<Renewal>,
}

impl<'c, 'o, T> Element<'c, 'o, T> {
    fn new(index: usize, machine: Machine<'c, Option<T>>, driver: Driver<'c, 'o>) -> Self {
        Self {
            index,
            machine,
            driver,
            deferred: None,
            renewal: None,
        }
    }
}

/// The elements' steps to send as one (each element's driver and its step).
fn sent<'e, 'c, 'o, T>(
    elements: &'e mut [Element<'c, 'o, T>],
) -> Vec<(&'e mut Driver<'c, 'o>, &'e Deferred)> {
    elements
        .iter_mut()
        .filter_map(|element| Some((&mut element.driver, element.deferred.as_ref()?)))
        .collect()
}

/// What each element of a batch comes to, decided step by step (the same for both
/// forms): a value (or a known absence) found, a stale value being refreshed, or one
/// computed.
struct Outcomes<T> {
    /// Each element's value, once known (`None` also for a stored absence, or an
    /// element computed since, until the loader's value lands).
    found: Vec<Option<T>>,
    /// The stale elements to refresh: their stamp and this process's refresh claim,
    /// held until the batch ends.
    stale: Vec<(usize, Stamp, RefreshClaim)>,
}

impl<T> Outcomes<T> {
    fn with_capacity(len: usize) -> Self {
        Self {
            found: std::iter::repeat_with(|| None).take(len).collect(),
            stale: Vec::new(),
        }
    }

    /// How far an element's run went: decided (found, or to compute: then its lock
    /// is kept alive from now, and it joins `pending`), or stopped before a step (it
    /// joins `stopped`).
    fn progressed<'c, 'o>(
        &mut self,
        mut element: Element<'c, 'o, T>,
        progress: Progress<Option<T>>,
        stopped: &mut Vec<Element<'c, 'o, T>>,
        pending: &mut Vec<Element<'c, 'o, T>>,
    ) {
        match progress {
            Progress::Decided(lookup) => {
                if self.looked_up(element.index, lookup) {
                    element.renewal = element.driver.keep_alive();
                    pending.push(element);
                }
            }
            Progress::Deferred(deferred) => {
                element.deferred = Some(deferred);
                stopped.push(element);
            }
        }
    }

    /// An element's lookup; `true` when the element is to be computed.
    fn looked_up(&mut self, index: usize, lookup: Lookup<Option<T>>) -> bool {
        match lookup {
            Lookup::Found(value) => self.found[index] = value,
            Lookup::Revalidate(value, Trigger { stamp, claim }) => {
                self.found[index] = value;
                self.stale.push((index, stamp, claim));
            }
            Lookup::Compute(_) | Lookup::Skip { .. } => return true,
        }
        false
    }

    /// The refreshes of the stale elements: each element's revalidation call.
    fn refreshes<'o>(&self, calls: &[Call<'o>]) -> Vec<(usize, Call<'o>, Stamp)> {
        self.stale
            .iter()
            .map(|(index, stamp, _)| (*index, calls[*index].revalidation(), *stamp))
            .collect()
    }

    /// A stale element's revalidation; `true` when it is to be computed (this caller
    /// holds its lock). Otherwise the stale value is served (another caller refreshes
    /// it, or did: backed off as a refresh that found the lock held).
    fn revalidated(&mut self, index: usize, lookup: Lookup<Option<T>>) -> bool {
        match lookup {
            Lookup::Compute(_) => true,
            Lookup::Found(value) | Lookup::Revalidate(value, _) => {
                self.found[index] = value;
                false
            }
            Lookup::Skip { back_off } => {
                let claim = self.stale.iter_mut().find(|(i, ..)| *i == index);
                if let (Some((.., claim)), Some(back_off)) = (claim, back_off) {
                    claim.back_off(Instant::now(), back_off);
                }
                false
            }
        }
    }

    /// A computed element's value (the loader's, stored as it is).
    fn computed(&mut self, index: usize, value: Option<T>) {
        self.found[index] = value;
    }

    /// The values found and computed, by element; absences left out.
    fn values<K: Eq + Hash>(self, elements: Vec<K>) -> HashMap<K, T> {
        // Sized first: collected from a `filter_map` (no lower bound), the map would
        // grow (and hash every element again) six times on the way to 100.
        let mut values = HashMap::with_capacity(self.found.iter().flatten().count());
        values.extend(
            self.found
                .into_iter()
                .zip(elements)
                .filter_map(|(value, element)| Some((element, value?))),
        );
        values
    }
}

/// Each element's call (its key moved into it, no copy; its own tags before the
/// options') and the elements, in the order of the keys (the order locks are taken
/// in), each key once: the first element named for it.
fn calls<S: AsRef<str>, K>(
    keys: impl IntoIterator<Item = (S, Vec<String>, K)>,
    opts: &MemoizeOptions,
    refresh: Refresh,
) -> (Vec<Call<'_>>, Vec<K>) {
    let mut elements: Vec<(CacheKey, Vec<String>, K)> = keys
        .into_iter()
        .map(|(key, tags, element)| (make_cache_key(key.as_ref()), tags, element))
        .collect();
    // Stable: the first element named for a key is kept.
    elements.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    elements.dedup_by(|later, first| later.0.as_str() == first.0.as_str());
    let mut calls = Vec::with_capacity(elements.len());
    let mut values = Vec::with_capacity(elements.len());
    for (key, tags, element) in elements {
        calls.push(Call::for_key(key, opts, refresh).with_element_tags(&tags));
        values.push(element);
    }
    (calls, values)
}

/// The batch's read: every element's stored bytes, or why the read failed.
type Reads = Result<Vec<Option<Vec<u8>>>, String>;

/// Every element's stored bytes in one read; `Err` (why) when the read failed, or
/// answered another number of values than keys (a broken backend). A tagged batch
/// reads its elements' tags' epochs in the same read (each tag once), and returns each
/// element's mix of its own: its value is judged by them (`None`: one of its epochs is
/// missing, so the element reads its own, which creates it; or it has no tags).
fn first_read(calls: &[Call<'_>]) -> (Reads, Vec<Option<u64>>) {
    let Some(first) = calls.first() else {
        return (Ok(Vec::new()), Vec::new());
    };
    let keys = ReadKeys::of(calls);
    let read = first.backend.get_many(&keys.keys);
    keys.split(calls, read)
}

/// The async form of [`first_read`].
async fn first_read_async(calls: &[Call<'_>]) -> (Reads, Vec<Option<u64>>) {
    let Some(first) = calls.first() else {
        return (Ok(Vec::new()), Vec::new());
    };
    let keys = ReadKeys::of(calls);
    let read = first.backend.get_many_async(&keys.keys).await;
    keys.split(calls, read)
}

/// The keys of the batch's read: every element's, then each tag's epoch once.
struct ReadKeys<'k> {
    keys: Vec<&'k str>,
    /// For each element (when any is tagged), where its tags' epochs are among the
    /// epochs read, in its tags' order.
    slots: Vec<Vec<usize>>,
}

impl<'k> ReadKeys<'k> {
    fn of(calls: &'k [Call<'_>]) -> Self {
        let mut keys: Vec<&str> = calls.iter().map(|call| call.key.as_str()).collect();
        if !calls.iter().any(Call::tagged) {
            return Self {
                keys,
                slots: Vec::new(),
            };
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut epochs: Vec<&str> = Vec::new();
        let slots = calls
            .iter()
            .map(|call| {
                call.tags
                    .iter()
                    .map(|tag| {
                        *index.entry(tag.as_str()).or_insert_with(|| {
                            epochs.push(tag.as_str());
                            epochs.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        keys.extend(epochs);
        Self { keys, slots }
    }

    /// The batch's read split into its elements' values and each element's epochs'
    /// mix.
    fn split(
        &self,
        calls: &[Call<'_>],
        read: Result<Vec<Option<Vec<u8>>>, Error>,
    ) -> (Reads, Vec<Option<u64>>) {
        let none = || vec![None; calls.len()];
        let expected = self.keys.len();
        let mut read = match read {
            Ok(read) if read.len() == expected => read,
            Ok(read) => {
                let why = format!(
                    "the backend answered {} values for {expected} keys",
                    read.len()
                );
                return (Err(why), none());
            }
            Err(err) => return (Err(err.to_string()), none()),
        };
        if self.slots.is_empty() {
            return (Ok(read), none());
        }
        let epochs = read.split_off(calls.len());
        let mixes = self
            .slots
            .iter()
            .map(|slots| {
                if slots.is_empty() {
                    return None;
                }
                // An epoch to create: the element reads (and creates) its own.
                crate::tags::mix_of(slots.iter().map(|slot| epochs[*slot].as_deref()))
            })
            .collect();
        (Ok(read), mixes)
    }
}

/// Element `index`'s part of the batch's read: its bytes, or the read's failure (each
/// element then fails open as a single call whose read failed does: computed in the
/// one loader call, not stored; a stalled backend costs the batch one timeout, not one
/// per element).
fn part(
    reads: &mut Result<Vec<Option<Vec<u8>>>, String>,
    call: &Call<'_>,
    index: usize,
) -> Result<Option<Vec<u8>>, Error> {
    match reads {
        Ok(reads) => Ok(reads[index].take()),
        Err(why) => Err(Error::backend("get_many", call.key.as_str(), why.clone())),
    }
}
