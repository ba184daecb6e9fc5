//! The memoized functions and how a worker thread calls them: every computation reads
//! its input's version from the authoritative store (a Redis server of its own, never
//! faulted), logs itself before its value exists, and returns the version with its
//! identity (or, for functions that may fail, sometimes `Err`/`None` after reading).
//! Function-form functions get their options from the plan; the attribute functions
//! cover what has no function form (`keep_decoded`, `shared_key`, `skip`,
//! `cache_none`) and the attribute's spelling of the others.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use cache_memoize::{
    CacheBackend, Clock, Error, MemoizeOptions, cache_memoize, invalidate, invalidate_tag_in,
    make_cache_key, memoize, memoize_async, memoize_detached, memoize_iter, refresh, refresh_async,
    try_memoize, try_memoize_async, try_memoize_detached,
};

use cache_memoize::__private::{memoize_batch_tagged, memoize_batch_tagged_async};

use crate::plan::{self, Form, Item, Spec, Value, sequence_len};
use crate::record::{CallKind, Comp, Shape, now_us};

/// What every computation in this process shares: where the truth lives, and the log
/// of computations.
pub(crate) struct Context {
    truth_url: String,
    proc: u8,
    next_comp: AtomicU64,
    comps: Mutex<Vec<Comp>>,
    /// The plan's computation delays, by function id.
    slow: Vec<Duration>,
    /// The plan's failure rates (percent), by function id.
    fails: Vec<u32>,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

/// Sets this process's context (once, before any call).
pub(crate) fn init(truth_url: String, proc: u8, specs: &[Spec]) {
    let mut slow = vec![Duration::ZERO; 256];
    let mut fails = vec![0; 256];
    for spec in specs {
        if let Some(at) = slow.get_mut(usize::from(spec.id)) {
            *at = spec.slow;
        }
        if let Some(at) = fails.get_mut(usize::from(spec.id)) {
            *at = spec.fails;
        }
    }
    let _ = CONTEXT.set(Context {
        truth_url,
        proc,
        next_comp: AtomicU64::new(0),
        comps: Mutex::default(),
        slow,
        fails,
    });
}

/// Calls that returned no value: a computation's `Err` (or a stale value's refresh
/// that failed and had nothing to serve), and `None`s of the `Option` functions.
static FAILED: AtomicU64 = AtomicU64::new(0);
static ABSENT: AtomicU64 = AtomicU64::new(0);

/// How many calls of this process returned `Err`, and how many `None`.
pub(crate) fn missing() -> (u64, u64) {
    (
        FAILED.load(Ordering::Relaxed),
        ABSENT.load(Ordering::Relaxed),
    )
}

/// What a failing computation returns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flaky;

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the computation failed (drawn)")
    }
}

impl std::error::Error for Flaky {}

/// A clock `ms` ahead of the system's (behind if negative); every process of the run
/// uses the same offset for a function.
struct Offset(i64);

impl Clock for Offset {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let by = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 { now + by } else { now - by }
    }
}

/// `clock = offset_clock` (the attribute function with `Spec::clock_ms` set).
fn offset_clock() -> Arc<dyn Clock> {
    Arc::new(Offset(plan::OFFSET_MS))
}

/// Checks that the `shared_key` attribute functions' key is the function form's (so
/// all three ways of calling function 103 share its entries).
pub(crate) fn check_shared_key() -> Result<(), String> {
    for arg in 0..plan::ARGS {
        let wanted = make_cache_key(&format!("cc:f103:{arg}"));
        let (a, b) = (shared_a_cache_key(arg), shared_b_cache_key(arg, 0));
        if a != wanted || b != wanted {
            return Err(format!(
                "shared_key: {a:?} and {b:?} are not the function form's {wanted:?}"
            ));
        }
    }
    Ok(())
}

/// The computations this process has run so far.
pub(crate) fn computations() -> Vec<Comp> {
    CONTEXT.get().map_or_else(Vec::new, |context| {
        context
            .comps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    })
}

thread_local! {
    static TRUTH: RefCell<Option<redis::Connection>> = const { RefCell::new(None) };
}

/// The truth key of function `f`'s argument `arg`.
pub(crate) fn truth_key(f: u16, arg: u16) -> String {
    format!("truth:{f}:{arg}")
}

/// Runs `command` on this thread's connection to the truth store (reconnecting once
/// after an error). The truth store is never faulted: an error here ends the run.
pub(crate) fn truth<T: redis::FromRedisValue>(command: &redis::Cmd) -> T {
    let Some(context) = CONTEXT.get() else {
        panic!("the checker's context is not set");
    };
    TRUTH.with(|cell| {
        let mut slot = cell.borrow_mut();
        for _ in 0..2 {
            if slot.is_none() {
                *slot = redis::Client::open(context.truth_url.as_str())
                    .and_then(|client| client.get_connection())
                    .ok();
            }
            if let Some(conn) = slot.as_mut() {
                match command.query::<T>(conn) {
                    Ok(out) => return out,
                    Err(_) => *slot = None,
                }
            }
        }
        panic!("the truth store does not answer");
    })
}

/// One computation of `f(arg)`: logged, then its input read, then (sometimes) a pause.
fn compute(f: u16, arg: u16) -> Value {
    let Some(context) = CONTEXT.get() else {
        panic!("the checker's context is not set");
    };
    let started_us = now_us();
    let comp = (u64::from(context.proc) << 48) | context.next_comp.fetch_add(1, Ordering::Relaxed);
    let version: Option<u64> = truth(redis::cmd("GET").arg(truth_key(f, arg)));
    let version = version.unwrap_or(0);
    context
        .comps
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Comp {
            id: comp,
            f,
            arg,
            version,
            started_us,
        });
    let slow = context
        .slow
        .get(usize::from(f))
        .copied()
        .unwrap_or_default();
    if !slow.is_zero() && fastrand::u8(0..3) == 0 {
        std::thread::sleep(slow.mul_f64(fastrand::f64()));
    }
    Value {
        f,
        arg,
        version,
        comp,
        started_us,
        ended_us: now_us(),
    }
}

/// Whether this computation of function `f` fails (drawn at its plan's rate).
fn fails_now(f: u16) -> bool {
    let rate = CONTEXT
        .get()
        .and_then(|context| context.fails.get(usize::from(f)).copied())
        .unwrap_or(0);
    rate > 0 && fastrand::u32(0..100) < rate
}

/// A computation that may fail after reading its input (`Spec::fails`).
fn compute_fallible(f: u16, arg: u16) -> Result<Value, Flaky> {
    let value = compute(f, arg);
    if fails_now(f) { Err(Flaky) } else { Ok(value) }
}

/// One computation of a sequence: its items carry the computation's value.
fn compute_iter(f: u16, arg: u16) -> impl Iterator<Item = Item> {
    let value = compute(f, arg);
    let len = sequence_len(value.version);
    (0..len).map(move |index| Item {
        value,
        index,
        len,
        pad: "x".repeat(40),
    })
}

#[cache_memoize(
    key = "cc:kept0:{arg}",
    expire = "300ms",
    stale = "300ms",
    beta = 1.0,
    lock(expire = "400ms", retry = "5ms"),
    keep_decoded
)]
fn kept0(arg: u16) -> Value {
    compute(100, arg)
}

#[cache_memoize(
    key = "cc:kept1:{arg}",
    expire = "200ms",
    large_values = "32B",
    keep_decoded
)]
fn kept1(arg: u16) -> Value {
    compute(101, arg)
}

#[cache_memoize(
    key = "cc:kept2:{arg}",
    expire = "250ms",
    stale = "500ms",
    refresh = "inline",
    lock(expire = "400ms", retry = "5ms", blocking = false),
    keep_decoded
)]
fn kept2(arg: u16) -> Value {
    compute(102, arg)
}

#[cache_memoize(
    key = "cc:f103:{arg}",
    shared_key,
    expire = "250ms",
    stale = "250ms",
    jitter = "30%",
    // Chunked here, whole in `shared_b`: each reads what the other wrote.
    large_values = 32,
    lock(expire = "400ms", retry = "5ms")
)]
fn shared_a(arg: u16) -> Value {
    compute(103, arg)
}

#[cache_memoize(
    key = "cc:f103:{arg}",
    shared_key,
    skip(note),
    expire = "250ms",
    stale = "250ms",
    jitter = "30%",
    lock(expire = "400ms", retry = "5ms")
)]
async fn shared_b(arg: u16, note: u32) -> Value {
    let _ = note;
    compute(103, arg)
}

#[cache_memoize(
    key = "cc:kept4:{arg}",
    expire = "200ms",
    stale = "400ms",
    fail_safe = "100ms",
    jitter = "20%",
    codec = "msgpack",
    version = 3,
    clock = offset_clock,
    lock(expire = "400ms", retry = "5ms")
)]
fn kept4(arg: u16) -> Result<Value, Flaky> {
    compute_fallible(104, arg)
}

#[cache_memoize(
    key = "cc:kept5:{arg}",
    expire = "300ms",
    stale = "300ms",
    refresh = "inline",
    cache_none = false,
    lock(expire = "400ms", retry = "5ms")
)]
fn kept5(arg: u16) -> Option<Value> {
    compute_fallible(105, arg).ok()
}

#[cache_memoize(
    key = "cc:kept6:{arg}",
    expire = "300ms",
    jitter = "50%",
    cache_none = true,
    force_overwrite
)]
fn kept6(arg: u16) -> Option<Value> {
    compute_fallible(106, arg).ok()
}

/// What one call returned.
pub(crate) struct Observed {
    pub(crate) value: Value,
    pub(crate) shape: Shape,
    pub(crate) kind: CallKind,
}

/// A worker thread's way to call the plan's functions.
pub(crate) struct Caller {
    specs: Arc<Vec<Spec>>,
    opts: Vec<MemoizeOptions>,
    /// Each function-form function's backend: its invalidations go there (the two
    /// backends name keys differently when one seals them).
    backends: Vec<Arc<dyn CacheBackend>>,
    runtime: tokio::runtime::Runtime,
}

impl Caller {
    /// A caller using `near` (registered) for functions with the near cache and
    /// `plain` for the others.
    pub(crate) fn new(
        specs: Arc<Vec<Spec>>,
        near: &Arc<dyn CacheBackend>,
        plain: &Arc<dyn CacheBackend>,
    ) -> std::io::Result<Self> {
        let backends: Vec<Arc<dyn CacheBackend>> = specs
            .iter()
            .map(|spec| Arc::clone(if spec.near { near } else { plain }))
            .collect();
        let opts = specs
            .iter()
            .zip(&backends)
            .map(|(spec, backend)| options(spec, backend))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            specs,
            opts,
            backends,
            runtime,
        })
    }

    /// The plan's function `index`.
    pub(crate) fn spec(&self, index: usize) -> &Spec {
        &self.specs[index]
    }

    /// Calls function `index` for `arg`, forced (`refresh`) or not; `None` when it
    /// returned no value (an `Err`, or a `None`), counted in [`missing`].
    pub(crate) fn call(
        &self,
        index: usize,
        arg: u16,
        forced: bool,
        slow_reader: bool,
    ) -> Option<Observed> {
        let spec = &self.specs[index];
        let tagged;
        let opts = if spec.tags && spec.form != Form::Batch {
            tagged = self.opts[index].clone().tags(spec.tags(arg));
            &tagged
        } else {
            &self.opts[index]
        };
        let (f, key) = (spec.id, spec.key(arg));
        let force = |call: &dyn Fn() -> Result<Value, Flaky>| {
            if forced { refresh(call) } else { call() }
        };
        let kind = if forced {
            CallKind::Refresh
        } else {
            CallKind::Read
        };
        let fallible = spec.fails > 0;
        let got = match spec.form {
            Form::Sync if fallible => {
                force(&|| try_memoize(&key, opts, || compute_fallible(f, arg)))
            }
            Form::Sync => force(&|| Ok(memoize(&key, opts, || compute(f, arg)))),
            Form::Detached if fallible => {
                force(&|| try_memoize_detached(&key, opts, move || compute_fallible(f, arg)))
            }
            Form::Detached => force(&|| Ok(memoize_detached(&key, opts, move || compute(f, arg)))),
            Form::Async => {
                let call = async {
                    if fallible {
                        try_memoize_async(&key, opts, || async move { compute_fallible(f, arg) })
                            .await
                    } else {
                        Ok(memoize_async(&key, opts, || async move { compute(f, arg) }).await)
                    }
                };
                if forced {
                    self.runtime.block_on(refresh_async(call))
                } else {
                    self.runtime.block_on(call)
                }
            }
            Form::Kept(0) => force(&|| Ok(kept0(arg))),
            Form::Kept(1) => force(&|| Ok(kept1(arg))),
            Form::Kept(2) => force(&|| Ok(kept2(arg))),
            // One key, three callers: two attribute functions and the function form.
            Form::Kept(3) => match fastrand::u8(0..3) {
                0 => force(&|| Ok(shared_a(arg))),
                1 => {
                    let call = shared_b(arg, fastrand::u32(..));
                    Ok(if forced {
                        self.runtime.block_on(refresh_async(call))
                    } else {
                        self.runtime.block_on(call)
                    })
                }
                _ => force(&|| Ok(memoize(&key, opts, || compute(f, arg)))),
            },
            Form::Kept(4) => force(&|| kept4(arg)),
            Form::Kept(5) => force(&|| kept5(arg).ok_or(Flaky)),
            Form::Kept(_) => force(&|| kept6(arg).ok_or(Flaky)),
            Form::Iter => return Some(iterate(&key, opts, (f, arg), forced, slow_reader)),
            Form::Batch => {
                let got = self.call_batch(index, &[arg], forced);
                return got.into_iter().next().and_then(|(_, observed)| observed);
            }
        };
        match got {
            Ok(value) => Some(Observed {
                value,
                shape: Shape::Whole,
                kind,
            }),
            Err(Flaky) => {
                let absent = matches!(spec.form, Form::Kept(5 | 6));
                let count = if absent { &ABSENT } else { &FAILED };
                count.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Caller {
    /// Calls batch function `index` for `args` at once (the attribute's batch entry,
    /// `memoize_batch_tagged`, or its async form every other call; with `tags`, each
    /// element tagged with its argument's tag), forced (`refresh`) or not: each
    /// argument's value, `None` for one the loader left out (a failing computation,
    /// drawn at the function's rate: stored as an absence), counted in [`missing`].
    pub(crate) fn call_batch(
        &self,
        index: usize,
        args: &[u16],
        forced: bool,
    ) -> Vec<(u16, Option<Observed>)> {
        let spec = &self.specs[index];
        let opts = &self.opts[index];
        let f = spec.id;
        // Each element with its argument's own tag (the attribute's per-element tag
        // templates), the function's tag in the options; the entry the attribute calls,
        // which `memoize_many` is with no element tags.
        let keys: Vec<(String, Vec<String>, u16)> = args
            .iter()
            .map(|arg| {
                let own = spec.tags.then(|| spec.tag(Some(*arg)));
                (spec.key(*arg), own.into_iter().collect(), *arg)
            })
            .collect();
        let load = move |held: &[u16]| -> HashMap<u16, Value> {
            held.iter()
                .filter_map(|arg| {
                    let value = compute(f, *arg);
                    (!fails_now(f)).then_some((*arg, value))
                })
                .collect()
        };
        let got =
            if fastrand::bool() {
                let call =
                    memoize_batch_tagged_async(keys, opts, move |held: Vec<u16>| async move {
                        load(&held)
                    });
                if forced {
                    self.runtime.block_on(refresh_async(call))
                } else {
                    self.runtime.block_on(call)
                }
            } else if forced {
                refresh(|| memoize_batch_tagged(keys, opts, load))
            } else {
                memoize_batch_tagged(keys, opts, load)
            };
        let kind = if forced {
            CallKind::Refresh
        } else {
            CallKind::Read
        };
        args.iter()
            .map(|arg| {
                let observed = got.get(arg).map(|value| Observed {
                    value: *value,
                    shape: Shape::Whole,
                    kind,
                });
                if observed.is_none() {
                    ABSENT.fetch_add(1, Ordering::Relaxed);
                }
                (*arg, observed)
            })
            .collect()
    }
}

/// Reads a memoized iterator to its end (a slow reader pauses after its second item),
/// and judges its items: one computation's, all of them, in order.
fn iterate(
    key: &str,
    opts: &MemoizeOptions,
    (f, arg): (u16, u16),
    forced: bool,
    slow_reader: bool,
) -> Observed {
    let read = || -> Vec<Item> {
        let mut items = Vec::new();
        for item in memoize_iter(key, opts, || compute_iter(f, arg)) {
            items.push(item);
            if slow_reader && items.len() == 2 {
                std::thread::sleep(Duration::from_millis(fastrand::u64(1..20)));
            }
        }
        items
    };
    let kind = if forced {
        CallKind::IterRefresh
    } else {
        CallKind::Iter
    };
    let nothing = |shape| Observed {
        value: Value {
            f,
            arg,
            version: 0,
            comp: u64::MAX,
            started_us: 0,
            ended_us: 0,
        },
        shape,
        kind,
    };
    let read = std::panic::AssertUnwindSafe(|| if forced { refresh(read) } else { read() });
    let items = match std::panic::catch_unwind(read) {
        Ok(items) => items,
        Err(panic) if is_changed(&*panic) => return nothing(Shape::Changed),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let Some(first) = items.first() else {
        return nothing(Shape::Truncated);
    };
    let shape = if items.iter().any(|item| item.value != first.value) {
        Shape::Mixed
    } else if items
        .iter()
        .enumerate()
        .any(|(i, item)| u32::try_from(i).ok() != Some(item.index))
    {
        Shape::Disordered
    } else if u32::try_from(items.len()).ok() != Some(first.len)
        || first.len != sequence_len(first.value.version)
    {
        Shape::Truncated
    } else {
        Shape::Whole
    };
    Observed {
        value: first.value,
        shape,
        kind,
    }
}

impl Caller {
    /// Invalidates function `index`'s value for `arg` (through the function's own
    /// backend, or the attribute's companion).
    pub(crate) fn invalidate(&self, index: usize, arg: u16) -> Result<(), Error> {
        let spec = &self.specs[index];
        match spec.form {
            Form::Kept(0) => kept0_invalidate(arg),
            Form::Kept(1) => kept1_invalidate(arg),
            Form::Kept(2) => kept2_invalidate(arg),
            Form::Kept(3) => match fastrand::u8(0..3) {
                0 => shared_a_invalidate(arg),
                1 => shared_b_invalidate(arg, fastrand::u32(..)),
                _ => invalidate(&spec.key(arg)),
            },
            Form::Kept(4) => kept4_invalidate(arg),
            Form::Kept(5) => kept5_invalidate(arg),
            Form::Kept(_) => kept6_invalidate(arg),
            // A tagged value: through its own tag, or its key, at even odds.
            _ if spec.tags && fastrand::bool() => {
                invalidate_tag_in(&*self.backends[index], &spec.tag(Some(arg)))
            }
            _ => {
                let key = make_cache_key(&spec.key(arg));
                self.backends[index].invalidate(key.as_str(), &key.lock_key())
            }
        }
    }

    /// Invalidates every value of tagged function `index` at once: its function's tag.
    pub(crate) fn invalidate_function(&self, index: usize) -> Result<(), Error> {
        let spec = &self.specs[index];
        invalidate_tag_in(&*self.backends[index], &spec.tag(None))
    }
}

/// Whether a panic is a memoized iterator's "the sequence changed while it was being
/// read" (its documented answer to a reader slower than the replaced chunks' grace).
pub(crate) fn is_changed(panic: &(dyn std::any::Any + Send)) -> bool {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied());
    message.is_some_and(|m| m.contains("changed while it was being read"))
}

/// The function-form options of `spec`, on `backend`.
fn options(spec: &Spec, backend: &Arc<dyn CacheBackend>) -> MemoizeOptions {
    let name: &'static str = Box::leak(format!("consistency::f{}", spec.id).into_boxed_str());
    let mut opts = MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .expire(spec.expire)
        .stale(spec.stale)
        .beta(spec.beta)
        .jitter(spec.jitter)
        .codec(spec.codec)
        .version(spec.version)
        .force_overwrite(spec.force)
        .compress(spec.compress)
        .name(name)
        .chunk_size(spec.chunk_size);
    if let Some(bytes) = spec.large_values {
        opts = opts.large_values(bytes);
    }
    // A batch's function tag is in its options; each element's own is added at the call.
    if spec.tags && spec.form == Form::Batch {
        opts = opts.tags([spec.tag(None)]);
    }
    if let Some(lock) = spec.lock {
        opts = opts.lock(lock);
    }
    if let Some(fail_safe) = spec.fail_safe {
        opts = opts.fail_safe(fail_safe);
    }
    if spec.clock_ms != 0 {
        opts = opts.clock(Arc::new(Offset(spec.clock_ms)));
    }
    opts
}
