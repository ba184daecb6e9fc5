//! The consistency checker: several processes × threads call memoized functions whose
//! inputs live in an authoritative store with versions, with option sets drawn at
//! random from every option (lock or none, blocking or not, so coalescing on or off;
//! `expire`; `stale`; `beta`; `jitter`; `fail_safe` with computations that fail;
//! `codec`; `version`; `force_overwrite`; `clock`; near cache or not; encryption at
//! rest on either backend (drawn per run from the seed); memoized
//! iterators with `compress` and `chunk_size`; sync, detached and async calls; batches,
//! `memoize_many` and `memoize_many_async` over several arguments at once, each element
//! judged as a call of its own) and attribute functions
//! for what has no function form or a spelling of its own (`keep_decoded`,
//! `shared_key` with `skip` on a key the function form shares, `cache_none` both
//! ways, `refresh = "inline"`, `Result` returns),
//! reading, forcing refreshes, invalidating and changing the data, while a fault
//! thread kills the near caches' invalidation connections, restarts the server,
//! stalls it (`CLIENT PAUSE`, `SIGSTOP`) and busy loops contend for every core. Every
//! value returned is then checked against the history (`check.rs` says what counts as
//! a violation).
//!
//! ```sh
//! cargo run --release --example consistency                         # >= 1,000,000 operations
//! CACHE_MEMOIZE_QUICK=1 cargo run --release --example consistency   # >= 10,000, a few seconds
//! cargo run --release --example consistency -- --seed 7 --seconds 60 --no-faults
//! ```
//!
//! Options: `--processes N` (4), `--threads N` (4), `--ops N` (1,000,000; quick:
//! 10,000), `--seconds S` (30; quick: 6: the least time the run takes, faults
//! included), `--busy-per-core N` (2), `--seed N` (random, printed), `--no-faults`.
//!
//! The last line is exactly
//! `operations=<n> violations=<n> max_staleness_ms=<x> bound_ms=<x>`; the exit code is
//! non-zero when there is a violation. Above it: the plan, the faults made, and each
//! violation (up to a few) with its function's options and its key's history.

// Times in µs as f64 for printing, far below 2^52: float casts lose nothing.
#![allow(clippy::cast_precision_loss)]

mod calls;
mod check;
mod conductor;
mod faults;
mod plan;
mod record;
mod said;
mod worker;

type Failure = Box<dyn std::error::Error>;

/// The run's settings (see the module docs).
pub(crate) struct Settings {
    processes: usize,
    threads: usize,
    ops: u64,
    seconds: f64,
    busy: usize,
    seed: u64,
    faults: bool,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let quick = std::env::var("CACHE_MEMOIZE_QUICK").is_ok_and(|v| v == "1");
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let mut settings = Self {
            processes: 4,
            threads: 4,
            ops: if quick { 10_000 } else { 1_000_000 },
            seconds: if quick { 6.0 } else { 30.0 },
            busy: 2 * cores,
            seed: fastrand::u64(..),
            faults: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--no-faults" {
                settings.faults = false;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{arg}: no value"))?;
            match arg.as_str() {
                "--processes" => settings.processes = value.parse()?,
                "--threads" => settings.threads = value.parse()?,
                "--ops" => settings.ops = value.parse()?,
                "--seconds" => settings.seconds = value.parse()?,
                "--busy-per-core" => settings.busy = value.parse::<usize>()? * cores,
                "--seed" => settings.seed = value.parse()?,
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        if settings.processes == 0 || settings.processes > 200 || settings.threads == 0 {
            return Err("--processes must be 1..=200 and --threads at least 1".into());
        }
        Ok(settings)
    }
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker::run(&args[1..]);
    }
    let settings = Settings::parse(&args)?;
    let violations = conductor::run(&settings)?;
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
