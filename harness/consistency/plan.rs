//! The functions the checker calls, each with an option set drawn from the run's seed
//! (every process draws the same plan from the same seed, so a key is always called
//! with one option set), and the values they return.

use std::time::Duration;

use cache_memoize::{Codec, LockOptions};
use serde::{Deserialize, Serialize};

/// Each function is called with this many arguments (keys): few, so callers collide.
pub(crate) const ARGS: u16 = 3;

/// How often the near cache pings its invalidation connection (README, "Near cache":
/// "a `PING` every 500 ms unanswered within the response timeout").
pub(crate) const NEAR_HEARTBEAT: Duration = Duration::from_millis(500);

/// The response timeout every backend of the run is built with.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a memoized function returns: who computed it, from which version of its
/// inputs, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Value {
    pub(crate) f: u16,
    pub(crate) arg: u16,
    /// The authoritative version the computation read.
    pub(crate) version: u64,
    /// The computation's id (in the computation log).
    pub(crate) comp: u64,
    /// When the computation began (µs since the epoch), before it read its input.
    pub(crate) started_us: u64,
    /// When it returned.
    pub(crate) ended_us: u64,
}

/// One item of a memoized iterator: the computation's identity, and its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) value: Value,
    pub(crate) index: u32,
    pub(crate) len: u32,
    /// Makes chunks fill: a sequence spans several chunks.
    pub(crate) pad: String,
}

/// How a function is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `memoize` (stale values refreshed inline).
    Sync,
    /// `memoize_detached` (stale values refreshed on a thread).
    Detached,
    /// `memoize_async` on the thread's own current-thread runtime.
    Async,
    /// `memoize_iter`, collected (sometimes slowly).
    Iter,
    /// `memoize_many` (or `memoize_many_async`, every other call) over several
    /// arguments at once, each element logged as a call of its own; a failing
    /// computation is an element the loader leaves out (stored as an absence).
    Batch,
    /// One of the attribute functions (`calls.rs`), by number: 0-2 with `keep_decoded`;
    /// 3 under a `shared_key` (two attribute functions, one with a `skip`ped
    /// parameter, and the function form, on one key); 4 returning `Result` with
    /// `fail_safe`, `jitter`, `codec`, `version` and `clock`; 5 returning `Option` with
    /// `cache_none = false`; 6 returning `Option` with `cache_none = true` and
    /// `force_overwrite`.
    Kept(u8),
}

/// One function: its id, form and options.
// Each flag is an option of its own, drawn independently: not a state in disguise.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) id: u16,
    pub(crate) form: Form,
    /// Whether it runs on the backend with the near cache (the registered one).
    pub(crate) near: bool,
    pub(crate) lock: Option<LockOptions>,
    pub(crate) expire: Duration,
    pub(crate) stale: Duration,
    pub(crate) beta: f64,
    /// The longest a computation sleeps after reading its input (widens races).
    pub(crate) slow: Duration,
    /// `jitter`: the largest fraction a stored TTL is cut by.
    pub(crate) jitter: f64,
    /// `fail_safe`: the pause after a failed refresh (`None`: the default).
    pub(crate) fail_safe: Option<Duration>,
    /// The percentage of computations that fail (return `Err`, so the function form
    /// is `try_memoize`'s); for `Option` functions, that return `None`.
    pub(crate) fails: u32,
    /// `codec`.
    pub(crate) codec: Codec,
    /// `version`.
    pub(crate) version: u32,
    /// `force_overwrite`: every call computes and stores (and counts as a write).
    pub(crate) force: bool,
    /// `clock`: the offset (ms) of the clock every process of the run reads for this
    /// function (0: the system clock). One offset fleet-wide, so freshness is unchanged.
    pub(crate) clock_ms: i64,
    /// `compress` (memoized iterators).
    pub(crate) compress: bool,
    /// `chunk_size` in bytes (memoized iterators: 64 gives each item a chunk of its
    /// own, 4,096 a whole sequence one chunk).
    pub(crate) chunk_size: usize,
    /// `large_values` (`None`: the default, 1 MiB, which no value here reaches; 32 B
    /// stores every value in chunks, behind a manifest).
    pub(crate) large_values: Option<usize>,
    /// `tags`: each value is tagged with its argument's tag and the function's (a
    /// batch's, with the function's alone); invalidations go through them.
    pub(crate) tags: bool,
}

impl Spec {
    /// A function with the runtime's defaults for every option the plan may draw.
    pub(crate) fn new(id: u16, form: Form, near: bool) -> Self {
        Self {
            id,
            form,
            near,
            lock: None,
            expire: Duration::from_secs(60),
            stale: Duration::ZERO,
            beta: 0.0,
            slow: Duration::ZERO,
            jitter: 0.0,
            fail_safe: None,
            fails: 0,
            codec: Codec::Bincode,
            version: 0,
            force: false,
            clock_ms: 0,
            compress: cache_memoize::DEFAULT_COMPRESS,
            chunk_size: 256,
            large_values: None,
            tags: false,
        }
    }
}

impl Spec {
    /// Whether in-process callers coalesce on one leader (a blocking lock).
    pub(crate) fn coalesces(&self) -> bool {
        self.lock.is_some_and(|lock| lock.blocking)
    }

    /// A one-line description, for the plan and for violations.
    pub(crate) fn describe(&self) -> String {
        let lock = match self.lock {
            None => "none".to_owned(),
            Some(lock) => format!(
                "{}{}expire={}ms",
                if lock.blocking { "" } else { "nonblocking," },
                lock.timeout
                    .map(|t| format!("timeout={}ms,", t.as_millis()))
                    .unwrap_or_default(),
                lock.expire.as_millis()
            ),
        };
        format!(
            "f{} {:?} near={} lock={} coalescing={} expire={}ms stale={}ms beta={} slow={}ms \
             jitter={} fail_safe={} fails={}% codec={:?} version={} force_overwrite={} \
             clock={:+}ms compress={} chunk_size={} large_values={} tags={}",
            self.id,
            self.form,
            self.near,
            lock,
            self.coalesces(),
            self.expire.as_millis(),
            self.stale.as_millis(),
            self.beta,
            self.slow.as_millis(),
            self.jitter,
            self.fail_safe
                .map_or_else(|| "default".to_owned(), |d| format!("{}ms", d.as_millis())),
            self.fails,
            self.codec,
            self.version,
            self.force,
            self.clock_ms,
            self.compress,
            self.chunk_size,
            self.large_values
                .map_or_else(|| "default".to_owned(), |b| format!("{b}B")),
            self.tags,
        )
    }

    /// The tag of argument `arg`'s value (`None`: the function's tag, which every value
    /// of the function has).
    pub(crate) fn tag(&self, arg: Option<u16>) -> String {
        match arg {
            Some(arg) => format!("cc:t{}:{arg}", self.id),
            None => format!("cc:t{}", self.id),
        }
    }

    /// The tags of argument `arg`'s value: its own and the function's (a batch's
    /// elements too: their own per element, the function's in the options).
    pub(crate) fn tags(&self, arg: u16) -> Vec<String> {
        vec![self.tag(Some(arg)), self.tag(None)]
    }

    /// The key of argument `arg` (function form).
    pub(crate) fn key(&self, arg: u16) -> String {
        format!("cc:f{}:{arg}", self.id)
    }
}

/// The attribute functions' fixed options (they are written out in `calls.rs`; keep the
/// two in step).
pub(crate) fn kept_specs() -> [Spec; 7] {
    let lock = |blocking| LockOptions {
        expire: Duration::from_millis(400),
        timeout: None,
        retry: Duration::from_millis(5),
        blocking,
    };
    [
        Spec {
            lock: Some(lock(true)),
            expire: Duration::from_millis(300),
            stale: Duration::from_millis(300),
            beta: 1.0,
            slow: Duration::from_millis(2),
            ..Spec::new(100, Form::Kept(0), true)
        },
        Spec {
            expire: Duration::from_millis(200),
            slow: Duration::from_millis(1),
            large_values: Some(32),
            ..Spec::new(101, Form::Kept(1), true)
        },
        Spec {
            lock: Some(lock(false)),
            expire: Duration::from_millis(250),
            stale: Duration::from_millis(500),
            slow: Duration::from_millis(2),
            ..Spec::new(102, Form::Kept(2), true)
        },
        Spec {
            lock: Some(lock(true)),
            expire: Duration::from_millis(250),
            stale: Duration::from_millis(250),
            jitter: 0.3,
            slow: Duration::from_millis(2),
            large_values: Some(32),
            ..Spec::new(103, Form::Kept(3), true)
        },
        Spec {
            lock: Some(lock(true)),
            expire: Duration::from_millis(200),
            stale: Duration::from_millis(400),
            slow: Duration::from_millis(1),
            jitter: 0.2,
            fail_safe: Some(Duration::from_millis(100)),
            fails: 30,
            codec: Codec::MessagePack,
            version: 3,
            clock_ms: OFFSET_MS,
            ..Spec::new(104, Form::Kept(4), true)
        },
        Spec {
            lock: Some(lock(true)),
            expire: Duration::from_millis(300),
            stale: Duration::from_millis(300),
            slow: Duration::from_millis(1),
            fails: 25,
            ..Spec::new(105, Form::Kept(5), true)
        },
        Spec {
            expire: Duration::from_millis(300),
            slow: Duration::from_millis(1),
            fails: 25,
            jitter: 0.5,
            force: true,
            ..Spec::new(106, Form::Kept(6), true)
        },
    ]
}

/// The offset of the clock some functions read (`Spec::clock_ms`), in ms.
pub(crate) const OFFSET_MS: i64 = 7_000;

/// Which of the two backends (the near one, the plain one) seal their values and hash
/// their key names (`RedisBuilder::encryption`): drawn from the seed, so every worker
/// process agrees.
pub(crate) fn sealed(seed: u64) -> (bool, bool) {
    let bits = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60;
    (bits & 1 == 1, bits & 2 == 2)
}

/// The secrets of the sealed backends (a test's own; never use fixed keys elsewhere).
pub(crate) fn encryption() -> cache_memoize::Encryption {
    cache_memoize::Encryption::new([7; 32])
        .key(2, [9; 32])
        .key(1, [8; 32])
}

/// The run's functions, drawn from `seed`: every combination of near cache and lock
/// kind once, with freshness options (`stale`, `beta`, `jitter`, `fail_safe`), failing
/// computations, `codec`, `version`, `force_overwrite`, `clock` and call form (a batch
/// among them) drawn at random; memoized iterators (`compress`, `chunk_size`
/// and `tags` drawn); two batch functions (`memoize_many`), their options drawn; and the
/// attribute functions (`keep_decoded`, `shared_key` with `skip`, `cache_none`,
/// `Result`).
pub(crate) fn draw(seed: u64) -> Vec<Spec> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let lock_kinds = [
        None,
        Some(LockOptions {
            timeout: None,
            ..LockOptions::default()
        }),
        Some(LockOptions {
            timeout: Some(Duration::from_millis(50)),
            ..LockOptions::default()
        }),
        Some(LockOptions {
            blocking: false,
            ..LockOptions::default()
        }),
    ];
    let expires = [100, 300, 1_000, 30_000];
    let stales = [0, 0, 150, 1_000];
    let betas = [0.0, 0.0, 1.0, 4.0];
    let jitters = [0.0, 0.0, 0.1, 0.5];
    let fail_safes = [None, None, Some(100), Some(1_000)];
    let fails = [0, 0, 10, 40];
    let offsets = [0, 0, OFFSET_MS, -OFFSET_MS];
    let mut specs = Vec::new();
    for (i, lock) in lock_kinds.iter().enumerate() {
        for near in [true, false] {
            let lock = lock.map(|lock| LockOptions {
                expire: Duration::from_millis([300, 2_000][rng.usize(0..2)]),
                retry: Duration::from_millis(5),
                ..lock
            });
            let form = [Form::Sync, Form::Detached, Form::Async, Form::Batch][rng.usize(0..4)];
            let id = u16::try_from(specs.len()).unwrap_or(u16::MAX);
            specs.push(Spec {
                lock,
                expire: Duration::from_millis(expires[rng.usize(0..expires.len())]),
                stale: Duration::from_millis(stales[(rng.usize(0..stales.len()) + i) % 4]),
                beta: betas[rng.usize(0..betas.len())],
                slow: Duration::from_millis(rng.u64(0..4)),
                jitter: jitters[rng.usize(0..jitters.len())],
                fail_safe: fail_safes[rng.usize(0..fail_safes.len())].map(Duration::from_millis),
                fails: fails[rng.usize(0..fails.len())],
                codec: [Codec::Bincode, Codec::MessagePack][rng.usize(0..2)],
                version: rng.u32(0..3),
                force: rng.usize(0..8) == 0,
                clock_ms: offsets[rng.usize(0..offsets.len())],
                large_values: [None, None, Some(32)][rng.usize(0..3)],
                tags: rng.usize(0..3) == 0,
                ..Spec::new(id, form, near)
            });
        }
    }
    for near in [true, false] {
        let id = u16::try_from(specs.len()).unwrap_or(u16::MAX);
        specs.push(Spec {
            lock: near.then(|| LockOptions {
                expire: Duration::from_millis(2_000),
                retry: Duration::from_millis(5),
                ..LockOptions::default()
            }),
            expire: Duration::from_millis(expires[rng.usize(0..3)]),
            slow: Duration::from_millis(1),
            jitter: jitters[rng.usize(0..jitters.len())],
            version: rng.u32(0..3),
            clock_ms: offsets[rng.usize(0..offsets.len())],
            compress: rng.bool(),
            chunk_size: [64, 256, 4_096][rng.usize(0..3)],
            tags: rng.usize(0..3) == 0,
            ..Spec::new(id, Form::Iter, near)
        });
    }
    // Batches whatever the draws above: one near, one plain, each lock kind possible.
    for near in [true, false] {
        let id = u16::try_from(specs.len()).unwrap_or(u16::MAX);
        let lock = lock_kinds[rng.usize(0..lock_kinds.len())].map(|lock| LockOptions {
            expire: Duration::from_millis([300, 2_000][rng.usize(0..2)]),
            retry: Duration::from_millis(5),
            ..lock
        });
        specs.push(Spec {
            lock,
            expire: Duration::from_millis(expires[rng.usize(0..expires.len())]),
            stale: Duration::from_millis(stales[rng.usize(0..stales.len())]),
            beta: betas[rng.usize(0..betas.len())],
            slow: Duration::from_millis(rng.u64(0..4)),
            jitter: jitters[rng.usize(0..jitters.len())],
            fails: fails[rng.usize(0..fails.len())],
            codec: [Codec::Bincode, Codec::MessagePack][rng.usize(0..2)],
            version: rng.u32(0..3),
            force: rng.usize(0..8) == 0,
            clock_ms: offsets[rng.usize(0..offsets.len())],
            large_values: [None, None, Some(32)][rng.usize(0..3)],
            tags: rng.usize(0..3) == 0,
            ..Spec::new(id, Form::Batch, near)
        });
    }
    specs.extend(kept_specs());
    specs
}

/// How long after another process's write a near copy may still be served: the
/// invalidation's delivery, at worst a silent link's heartbeat plus the response
/// timeout (README, "Near cache"). Writes through a process's own backend drop its
/// copy before they return: no allowance there, nor without a near cache.
pub(crate) fn near_bound() -> Duration {
    NEAR_HEARTBEAT + RESPONSE_TIMEOUT
}

/// A sequence's length for a version: several chunks, varying with each write.
pub(crate) fn sequence_len(version: u64) -> u32 {
    6 + u32::try_from(version % 7).unwrap_or(0) * 2
}
