//! Batch memoization: many keys, one read, one call of the loader for the keys this
//! caller holds.
//!
//! A batch runs each element's own sequence (the same machine and driver as a
//! [`memoize`](crate::memoize) call, so every rule of a key holds per element: its
//! lock, fencing, in-process flights, waits for another process's computation,
//! invalidation, large values), with two differences:
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
//!
//! - **Stale elements are refreshed in the batch.** Under `stale` (or `beta`), an
//!   element found stale (or drawn for an early refresh) is revalidated as a call with
//!   `refresh = "inline"` would: its refresh takes the key's lock if no one else is
//!   refreshing it, and joins the elements passed to the one loader call; the batch then
//!   returns the new value. One that another caller is refreshing is served stale.
//!
//! Elements are looked up in the order of their keys, so two batches that overlap
//! (in one process or in two) take their locks in one order: no deadlock. An element
//! whose key another caller is computing is waited for before the next element is
//! looked up. Values of a batch are stored as `Option<T>`: a single-key call of the same
//! key with `T` reads them as another type (a miss).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::time::Instant;

use crate::codec::Stamp;
use crate::error::Error;
use crate::key::{CacheKey, make_cache_key};
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::claim::RefreshClaim;
use crate::refresh::scope::take_forced;
use crate::sequence::{Call, Driver, Lookup, Trigger};

/// Returns the values memoized at each of `keys` (pairs of a cache key and the element
/// it stands for), computing the missing ones with **one** call of `load`, given
/// exactly the elements this caller computes; elements another caller (thread or
/// process) is computing are waited for and read, never computed twice.
///
/// All-hit batches cost one command (`MGET`); each element to compute costs its lock
/// attempt and its store. An element `load` does not return is stored as an absence and
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
    let refresh = Refresh::of(opts, take_forced());
    // Each key moves into its element's call (no copy per element).
    let (calls, elements): (Vec<Call<'_>>, Vec<K>) = elements(keys)
        .into_iter()
        .map(|(key, element)| (Call::for_key(key, opts, refresh), element))
        .unzip();
    let mut reads = first_read(&calls);
    let mut batch = Outcomes::with_capacity(elements.len());
    let mut pending = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let mut machine = call.machine::<Option<T>>(true, None);
        let mut driver = Driver::blocking(call);
        let lookup = driver.lookup_read(&mut machine, part(&mut reads, call, index));
        if batch.looked_up(index, lookup) {
            // Kept alive from now: the next elements' waits may outlast its expiry.
            let renewal = driver.keep_alive();
            pending.push((index, machine, driver, renewal));
        }
    }
    let refreshes = batch.refreshes(&calls);
    for (index, call, stamp) in &refreshes {
        let mut machine = call.machine::<Option<T>>(false, None).revalidating(*stamp);
        let mut driver = Driver::blocking(call);
        let lookup = driver.lookup(&mut machine);
        if batch.revalidated(*index, lookup) {
            let renewal = driver.keep_alive();
            pending.push((*index, machine, driver, renewal));
        }
    }
    if pending.is_empty() {
        return batch.values(elements);
    }
    let held: Vec<K> = pending
        .iter()
        .map(|(index, ..)| elements[*index].clone())
        .collect();
    let mut loaded = load(&held);
    for (index, mut machine, mut driver, renewal) in pending {
        drop(renewal);
        let value = loaded.remove(&elements[index]);
        let stored = driver.compute(&mut machine, || Ok::<_, Infallible>(value), |_| false);
        batch.computed(index, stored);
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
    let refresh = Refresh::of(opts, take_forced());
    // Each key moves into its element's call (no copy per element).
    let (calls, elements): (Vec<Call<'_>>, Vec<K>) = elements(keys)
        .into_iter()
        .map(|(key, element)| (Call::for_key(key, opts, refresh), element))
        .unzip();
    let mut reads = first_read_async(&calls).await;
    let mut batch = Outcomes::with_capacity(elements.len());
    let mut pending = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let mut machine = call.machine::<Option<T>>(true, None);
        let mut driver = Driver::nonblocking(call);
        let read = part(&mut reads, call, index);
        let lookup = driver.lookup_read_async(&mut machine, read).await;
        if batch.looked_up(index, lookup) {
            // Kept alive from now: the next elements' waits may outlast its expiry.
            let renewal = driver.keep_alive();
            pending.push((index, machine, driver, renewal));
        }
    }
    let refreshes = batch.refreshes(&calls);
    for (index, call, stamp) in &refreshes {
        let mut machine = call.machine::<Option<T>>(false, None).revalidating(*stamp);
        let mut driver = Driver::nonblocking(call);
        let lookup = driver.lookup_async(&mut machine).await;
        if batch.revalidated(*index, lookup) {
            let renewal = driver.keep_alive();
            pending.push((*index, machine, driver, renewal));
        }
    }
    if pending.is_empty() {
        return batch.values(elements);
    }
    let held: Vec<K> = pending
        .iter()
        .map(|(index, ..)| elements[*index].clone())
        .collect();
    let mut loaded = load(held).await;
    for (index, mut machine, mut driver, renewal) in pending {
        drop(renewal);
        let value = loaded.remove(&elements[index]);
        let computed = || async { Ok::<_, Infallible>(value) };
        let stored = driver
            .compute_async(&mut machine, computed, |_| false)
            .await;
        batch.computed(index, stored);
    }
    batch.values(elements)
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

    /// A computed element's value (`Err` never comes: the loader's output is stored as
    /// it is).
    fn computed(&mut self, index: usize, stored: Result<Option<T>, Infallible>) {
        let Ok(value) = stored;
        self.found[index] = value;
    }

    /// The values found and computed, by element; absences left out.
    fn values<K: Eq + Hash>(self, elements: Vec<K>) -> HashMap<K, T> {
        self.found
            .into_iter()
            .zip(elements)
            .filter_map(|(value, element)| Some((element, value?)))
            .collect()
    }
}

/// The batch's elements with their finished keys, in the order of the keys (the order
/// locks are taken in), each key once.
fn elements<S: AsRef<str>, K>(keys: impl IntoIterator<Item = (S, K)>) -> Vec<(CacheKey, K)> {
    let mut elements: Vec<(CacheKey, K)> = keys
        .into_iter()
        .map(|(key, element)| (make_cache_key(key.as_ref()), element))
        .collect();
    // Stable: the first element named for a key is kept.
    elements.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    elements.dedup_by(|later, first| later.0.as_str() == first.0.as_str());
    elements
}

/// Every element's stored bytes in one read; `Err` (why) when the read failed, or
/// answered another number of values than keys (a broken backend).
fn first_read(calls: &[Call<'_>]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let Some(first) = calls.first() else {
        return Ok(Vec::new());
    };
    if first.tagged() {
        return Ok(unread(calls));
    }
    let keys: Vec<&str> = calls.iter().map(|call| call.key.as_str()).collect();
    counted(calls, first.backend.get_many(&keys))
}

/// The async form of [`first_read`].
async fn first_read_async(calls: &[Call<'_>]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let Some(first) = calls.first() else {
        return Ok(Vec::new());
    };
    if first.tagged() {
        return Ok(unread(calls));
    }
    let keys: Vec<&str> = calls.iter().map(|call| call.key.as_str()).collect();
    counted(calls, first.backend.get_many_async(&keys).await)
}

/// A tagged batch's first read, not sent: each element reads its value with the
/// batch's tags' epochs (one `get_many` each), so a read of the values alone would be
/// a round trip whose answer no element uses.
fn unread(calls: &[Call<'_>]) -> Vec<Option<Vec<u8>>> {
    vec![None; calls.len()]
}

/// The batch's read, checked to answer one value per key.
fn counted(
    calls: &[Call<'_>],
    read: Result<Vec<Option<Vec<u8>>>, Error>,
) -> Result<Vec<Option<Vec<u8>>>, String> {
    match read {
        Ok(reads) if reads.len() == calls.len() => Ok(reads),
        Ok(reads) => Err(format!(
            "the backend answered {} values for {} keys",
            reads.len(),
            calls.len()
        )),
        Err(err) => Err(err.to_string()),
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
