//! A worker process: T threads call the plan's functions at random (reads, forced
//! refreshes, invalidations, data changes) until the conductor's deadline has passed
//! and each thread has made its share of the operations; then, when told, it writes
//! its history to its log file.
//!
//! Protocol on stdin/stdout, one line each: the worker says `ready` (its near cache is
//! live); the conductor says `go <deadline_us>`; the worker says `finished <ops>`; the
//! conductor says `dump` (every process has stopped calling, so every value anyone
//! read has been logged by the process that computed it); the worker writes its log
//! and says `dumped`.

use std::io::{BufRead, BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, NearCache, RedisBackend, set_shared_backend};

use crate::Failure;
use crate::calls::{self, Caller, Observed, truth, truth_key};
use crate::plan::{self, ARGS, Form, RESPONSE_TIMEOUT};
use crate::record::{Call, Record, Write, WriteKind, now_us};
use crate::said;

/// What the conductor tells a worker on its command line.
pub(crate) struct Orders {
    pub(crate) index: u8,
    pub(crate) dir: PathBuf,
    pub(crate) cache_url: String,
    pub(crate) truth_url: String,
    pub(crate) seed: u64,
    pub(crate) threads: usize,
    pub(crate) min_ops: u64,
}

impl Orders {
    /// The command-line arguments that carry these orders.
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--worker".into(),
            self.index.to_string(),
            self.dir.display().to_string(),
            self.cache_url.clone(),
            self.truth_url.clone(),
            self.seed.to_string(),
            self.threads.to_string(),
            self.min_ops.to_string(),
        ]
    }

    fn parse(args: &[String]) -> Result<Self, Failure> {
        let arg = |i: usize| -> Result<&str, Failure> {
            args.get(i)
                .map(String::as_str)
                .ok_or_else(|| format!("worker: argument {i} missing").into())
        };
        Ok(Self {
            index: arg(0)?.parse()?,
            dir: PathBuf::from(arg(1)?),
            cache_url: arg(2)?.to_owned(),
            truth_url: arg(3)?.to_owned(),
            seed: arg(4)?.parse()?,
            threads: arg(5)?.parse()?,
            min_ops: arg(6)?.parse()?,
        })
    }
}

/// The worker process's main.
pub(crate) fn run(args: &[String]) -> Result<(), Failure> {
    let orders = Orders::parse(args)?;
    said::install();
    quiet_changed_panics();
    let specs = Arc::new(plan::draw(orders.seed));
    calls::init(orders.truth_url.clone(), orders.index, &specs);
    calls::check_shared_key()?;
    let (near_sealed, plain_sealed) = plan::sealed(orders.seed);
    let builder = |sealed: bool| {
        let builder =
            RedisBackend::builder([orders.cache_url.as_str()]).response_timeout(RESPONSE_TIMEOUT);
        if sealed {
            builder.encryption(plan::encryption())
        } else {
            builder
        }
    };
    let near = builder(near_sealed)
        .near_cache(NearCache::new())
        .connect()?;
    let near = Arc::new(near);
    let plain: Arc<dyn CacheBackend> = Arc::new(builder(plain_sealed).connect()?);
    let live_by = Instant::now() + Duration::from_secs(20);
    while !near.is_near_cache_live() {
        if Instant::now() > live_by {
            return Err("the near cache's tracking never came on".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let near_dyn: Arc<dyn CacheBackend> = Arc::clone(&near) as Arc<dyn CacheBackend>;
    set_shared_backend(Arc::clone(&near_dyn));

    let mut stdin = std::io::stdin().lock();
    say("ready")?;
    let deadline_us = match hear(&mut stdin)?.strip_prefix("go ") {
        Some(deadline) => deadline.trim().parse::<u64>()?,
        None => return Err("worker: expected `go <deadline>`".into()),
    };

    let threads: Vec<_> = (0..orders.threads)
        .map(|thread| {
            let caller = Caller::new(Arc::clone(&specs), &near_dyn, &plain);
            let (proc, min_ops, functions) = (orders.index, orders.min_ops, specs.len());
            let seed = orders.seed ^ (u64::from(proc) << 32) ^ thread as u64;
            std::thread::spawn(move || -> Result<Vec<Record>, String> {
                let caller = caller.map_err(|err| err.to_string())?;
                let mut thread = Thread {
                    caller,
                    proc,
                    rng: fastrand::Rng::with_seed(seed),
                    records: Vec::new(),
                };
                let mut ops = 0_u64;
                while ops < min_ops || now_us() < deadline_us {
                    thread.step(functions);
                    ops += 1;
                }
                Ok(thread.records)
            })
        })
        .collect();
    let mut records = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(Ok(mut done)) => records.append(&mut done),
            Ok(Err(err)) => return Err(err.into()),
            Err(_) => return Err("a worker thread panicked".into()),
        }
    }
    let ops = records
        .iter()
        .filter(|r| matches!(r, Record::Call(_) | Record::Write(_)))
        .count();
    let (failed, absent) = calls::missing();
    say(&format!(
        "finished {ops} warnings={} near_hits={} failed={failed} absent={absent}",
        said::warnings(),
        near.near_cache_hits()
    ))?;
    if hear(&mut stdin)?.trim() != "dump" {
        return Err("worker: expected `dump`".into());
    }
    let path = orders.dir.join(format!("proc-{}.log", orders.index));
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    for comp in calls::computations() {
        writeln!(out, "{}", Record::Comp(comp).line())?;
    }
    for record in &records {
        writeln!(out, "{}", record.line())?;
    }
    out.flush()?;
    say("dumped")?;
    Ok(())
}

/// Keeps the iterators' "sequence changed" panics (caught and counted) off stderr;
/// every other panic is reported as usual.
fn quiet_changed_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !calls::is_changed(info.payload()) {
            report(info);
        }
    }));
}

fn say(line: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

fn hear(stdin: &mut std::io::StdinLock<'_>) -> Result<String, Failure> {
    let mut line = String::new();
    if stdin.read_line(&mut line)? == 0 {
        return Err("worker: the conductor went away".into());
    }
    Ok(line)
}

/// One worker thread.
struct Thread {
    caller: Caller,
    proc: u8,
    rng: fastrand::Rng,
    records: Vec<Record>,
}

impl Thread {
    /// One operation on a random function and argument: mostly reads; some forced
    /// refreshes, invalidations and data changes (bump the version, then invalidate).
    fn step(&mut self, functions: usize) {
        let index = self.rng.usize(0..functions);
        let arg = self.rng.u16(0..ARGS);
        match self.rng.u32(0..100) {
            0..80 => self.read(index, arg, false),
            80..86 => self.read(index, arg, true),
            86..90 => self.write(index, arg, false),
            _ => self.write(index, arg, true),
        }
    }

    /// A call; forced by `refresh` (or by the function's `force_overwrite`), it is a
    /// write too, unless it returned no value.
    fn read(&mut self, index: usize, arg: u16, forced: bool) {
        let forced = forced || self.caller.spec(index).force;
        if self.caller.spec(index).form == Form::Batch {
            return self.read_batch(index, arg, forced);
        }
        let slow_reader = self.rng.u8(0..4) == 0;
        let start_us = now_us();
        let (observed, said) = if forced {
            said::watch(|| self.caller.call(index, arg, true, slow_reader))
        } else {
            (self.caller.call(index, arg, false, slow_reader), false)
        };
        let end_us = now_us();
        self.log(index, arg, forced, (start_us, end_us), observed, said);
    }

    /// A batch call of `arg` and, each at even odds, the function's other arguments;
    /// each element logged as a call of its own (and, forced, a write of its own), as
    /// if it had been called alone over the batch's span.
    fn read_batch(&mut self, index: usize, arg: u16, forced: bool) {
        let mut args = vec![arg];
        args.extend((0..ARGS).filter(|other| *other != arg && self.rng.bool()));
        self.rng.shuffle(&mut args);
        let start_us = now_us();
        let (got, said) = if forced {
            said::watch(|| self.caller.call_batch(index, &args, true))
        } else {
            (self.caller.call_batch(index, &args, false), false)
        };
        let end_us = now_us();
        for (arg, observed) in got {
            self.log(index, arg, forced, (start_us, end_us), observed, said);
        }
    }

    /// Logs what a call of `index` for `arg` returned over `start_us..end_us`; forced,
    /// a write too.
    fn log(
        &mut self,
        index: usize,
        arg: u16,
        forced: bool,
        (start_us, end_us): (u64, u64),
        observed: Option<Observed>,
        said: bool,
    ) {
        // An `Err` or a `None`: nothing to judge, and a forced one stored nothing.
        let Some(observed) = observed else { return };
        let f = self.caller_spec_id(index);
        self.records.push(Record::Call(Call {
            proc: self.proc,
            f,
            arg,
            kind: observed.kind,
            start_us,
            end_us,
            value: observed.value,
            shape: observed.shape,
        }));
        if forced {
            self.records.push(Record::Write(Write {
                proc: self.proc,
                f,
                arg,
                kind: WriteKind::Refresh,
                start_us,
                done_us: now_us(),
                min_version: observed.value.version,
                min_started_us: observed.value.started_us,
                said,
            }));
        }
    }

    /// Invalidates the key (after bumping its input's version, for a data change),
    /// retrying until the invalidation returns `Ok` (the server may be restarting or
    /// stalled); a write that never returned `Ok` orders nothing and is not logged.
    fn write(&mut self, index: usize, arg: u16, change: bool) {
        if self.caller.spec(index).tags && self.rng.u8(0..4) == 0 {
            return self.write_function(index, change);
        }
        let f = self.caller_spec_id(index);
        let start_us = now_us();
        let min_version = if change {
            truth::<u64>(redis::cmd("INCR").arg(truth_key(f, arg)))
        } else {
            0
        };
        let min_started_us = now_us();
        if !until_ok(|| self.caller.invalidate(index, arg)) {
            return;
        }
        self.records.push(Record::Write(Write {
            proc: self.proc,
            f,
            arg,
            kind: if change {
                WriteKind::Change
            } else {
                WriteKind::Invalidate
            },
            start_us,
            done_us: now_us(),
            min_version,
            min_started_us,
            said: false,
        }));
    }

    /// A write of every argument of tagged function `index` at once (after bumping
    /// each one's input, for a data change): one invalidation of the function's tag,
    /// logged as a write of each argument.
    fn write_function(&mut self, index: usize, change: bool) {
        let f = self.caller_spec_id(index);
        let start_us = now_us();
        let versions: Vec<u64> = (0..ARGS)
            .map(|arg| {
                if change {
                    truth::<u64>(redis::cmd("INCR").arg(truth_key(f, arg)))
                } else {
                    0
                }
            })
            .collect();
        let min_started_us = now_us();
        if !until_ok(|| self.caller.invalidate_function(index)) {
            return;
        }
        let done_us = now_us();
        for (arg, min_version) in (0..ARGS).zip(versions) {
            self.records.push(Record::Write(Write {
                proc: self.proc,
                f,
                arg,
                kind: if change {
                    WriteKind::Change
                } else {
                    WriteKind::Invalidate
                },
                start_us,
                done_us,
                min_version,
                min_started_us,
                said: false,
            }));
        }
    }

    fn caller_spec_id(&self, index: usize) -> u16 {
        self.caller.spec(index).id
    }
}

/// Retries `invalidate` until it returns `Ok` (the server may be restarting or
/// stalled), for up to 10 s; whether it did.
fn until_ok<E>(mut invalidate: impl FnMut() -> Result<(), E>) -> bool {
    let give_up = Instant::now() + Duration::from_secs(10);
    while invalidate().is_err() {
        if Instant::now() > give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
