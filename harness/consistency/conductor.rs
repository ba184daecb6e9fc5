//! The conductor (the process `cargo run` starts): two private Redis servers (the cache,
//! which it faults, and the truth, which it never touches), the worker processes, the
//! fault thread and the busy loops; then the logs, the check and the report.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use cache_memoize_tests::server::RedisServer;

use crate::check::{self, Kind, Report, Violation};
use crate::plan::{self, Spec};
use crate::record::{Record, now_us};
use crate::worker::Orders;
use crate::{Failure, Settings, faults};

/// How long the workers may take to finish their share (a hang ends the run).
const GRACE: Duration = Duration::from_secs(3600);

/// How many violations are shown with their key's history.
const SHOWN: usize = 8;

/// The workers' stdout lines, each with the worker's index.
type Lines = Receiver<(usize, String)>;

struct Worker {
    child: Child,
    input: ChildStdin,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workers' log directory, removed when the run ends (however it ends).
struct Logs(PathBuf);

impl Logs {
    fn create() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("cache-memoize-consistency-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The whole run; prints the report and returns the number of violations.
pub(crate) fn run(settings: &Settings) -> Result<usize, Failure> {
    let specs = plan::draw(settings.seed);
    println!(
        "consistency: {} processes x {} threads, >= {} operations, >= {} s, seed {}, \
         {} busy loops, faults {}",
        settings.processes,
        settings.threads,
        settings.ops,
        settings.seconds,
        settings.seed,
        settings.busy,
        if settings.faults { "on" } else { "off" },
    );
    let (near_sealed, plain_sealed) = plan::sealed(settings.seed);
    println!("  encryption at rest: near backend {near_sealed}, plain backend {plain_sealed}");
    for spec in &specs {
        println!("  {}", spec.describe());
    }
    let cache = RedisServer::start();
    let truth = RedisServer::start();
    let logs = Logs::create()?;
    let dir = logs.0.clone();

    let (mut workers, lines) = spawn_workers(settings, &dir, &cache, &truth)?;
    expect_all(&lines, settings.processes, "ready", Duration::from_secs(60))?;

    let started = Instant::now();
    let run_for = Duration::try_from_secs_f64(settings.seconds).unwrap_or(Duration::ZERO);
    let deadline_us = now_us() + u64::try_from(run_for.as_micros()).unwrap_or(u64::MAX);

    for worker in &mut workers {
        writeln!(worker.input, "go {deadline_us}")?;
        worker.input.flush()?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let busy = faults::busy_loops(settings.busy, &stop);
    let (fault_thread, idle_cache) = if settings.faults {
        let thread = faults::start(cache, Arc::clone(&stop), settings.seed);
        (Some(thread), None)
    } else {
        (None, Some(cache))
    };
    // Faults and busy loops go on until every worker has made its share and the
    // deadline has passed.
    let finished = expect_all(&lines, settings.processes, "finished", GRACE);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (cache, fault_log) = match fault_thread {
        Some(thread) => match thread.join() {
            Ok((cache, faults)) => (Some(cache), faults),
            Err(_) => return Err("the fault thread panicked".into()),
        },
        None => (idle_cache, Vec::new()),
    };
    for loop_thread in busy {
        let _ = loop_thread.join();
    }
    let finished = finished?;
    for worker in &mut workers {
        writeln!(worker.input, "dump")?;
        worker.input.flush()?;
    }
    if let Err(err) = expect_all(
        &lines,
        settings.processes,
        "dumped",
        Duration::from_secs(60),
    ) {
        for (index, worker) in workers.iter_mut().enumerate() {
            println!("worker {index}: {:?}", worker.child.try_wait());
        }
        return Err(err);
    }
    drop(workers);
    drop(cache);

    let mut records = load(&dir, settings.processes)?;
    drop(logs);
    records.extend(fault_log.into_iter().map(Record::Fault));
    let mut report = check::check(&records, &specs);
    // Calls that returned no value (an `Err`, a `None`) are operations too, with
    // nothing to judge; each worker counts them on its `finished` line.
    report.operations += finished
        .iter()
        .map(|line| said_count(line, "failed=") + said_count(line, "absent="))
        .sum::<u64>();
    print_report(&report, &records, &specs, &finished, elapsed);
    Ok(report.violations.len())
}

/// The number after `name` in a worker's `finished` line (0 if it is not there).
fn said_count(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Starts the worker processes; their stdout lines arrive on the receiver, by index.
fn spawn_workers(
    settings: &Settings,
    dir: &Path,
    cache: &RedisServer,
    truth: &RedisServer,
) -> Result<(Vec<Worker>, Lines), Failure> {
    let threads_total = settings.processes * settings.threads;
    let min_ops = settings.ops.div_ceil(threads_total.max(1) as u64);
    let (lines_tx, lines) = channel::<(usize, String)>();
    let mut workers = Vec::new();
    for index in 0..settings.processes {
        let orders = Orders {
            index: u8::try_from(index)?,
            dir: dir.to_path_buf(),
            cache_url: cache.url(),
            truth_url: truth.url(),
            seed: settings.seed,
            threads: settings.threads,
            min_ops,
        };
        let mut child = Command::new(std::env::current_exe()?)
            .args(orders.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let input = child.stdin.take().ok_or("worker: no stdin")?;
        let output = child.stdout.take().ok_or("worker: no stdout")?;
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if tx.send((index, line)).is_err() {
                    break;
                }
            }
            let _ = tx.send((index, "exited".to_owned()));
        });
        workers.push(Worker { child, input });
    }
    Ok((workers, lines))
}

/// Waits until every worker has said a line starting with `word`; returns the lines.
fn expect_all(
    lines: &Lines,
    workers: usize,
    word: &str,
    within: Duration,
) -> Result<Vec<String>, Failure> {
    let deadline = Instant::now() + within;
    let mut said: Vec<Option<String>> = vec![None; workers];
    while said.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((index, line)) if line.starts_with(word) => said[index] = Some(line),
            Ok((index, line)) if line == "exited" && said[index].is_some() => {}
            Ok((index, line)) if line == "exited" => {
                return Err(format!("worker {index} exited before saying `{word}`").into());
            }
            Ok((index, line)) => println!("worker {index}: {line}"),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the workers did not say `{word}` within {within:?}").into());
            }
            Err(RecvTimeoutError::Disconnected) => return Err("every worker went away".into()),
        }
    }
    Ok(said.into_iter().flatten().collect())
}

/// Every worker's log.
fn load(dir: &Path, workers: usize) -> Result<Vec<Record>, Failure> {
    let mut records = Vec::new();
    for index in 0..workers {
        let path: PathBuf = dir.join(format!("proc-{index}.log"));
        let file = std::fs::File::open(&path)?;
        for line in BufReader::new(file).lines() {
            let line = line?;
            match Record::parse(&line) {
                Some(record) => records.push(record),
                None => return Err(format!("{}: unreadable line {line:?}", path.display()).into()),
            }
        }
    }
    Ok(records)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print_report(
    report: &Report,
    records: &[Record],
    specs: &[Spec],
    finished: &[String],
    elapsed: Duration,
) {
    for (index, line) in finished.iter().enumerate() {
        println!("worker {index}: {line}");
    }
    let mut faults: HashMap<&str, usize> = HashMap::new();
    for record in records {
        if let Record::Fault(f) = record {
            *faults.entry(f.kind.as_str()).or_default() += 1;
        }
    }
    let mut faults: Vec<_> = faults.into_iter().collect();
    faults.sort_unstable();
    println!("faults: {faults:?}");
    println!(
        "{} calls with a value and {} writes in {:.1} s (and {} calls with none: an `Err` \
         or a `None`); {} forced refreshes said they may not have stored; \
         {} iterator reads panicked saying their sequence changed; \
         {} reads within the near cache's allowance",
        report.calls,
        report.writes,
        elapsed.as_secs_f64(),
        report.operations - report.calls - report.writes,
        report.refreshes_said,
        report.iterators_changed,
        report.stale_allowed
    );
    let mut by_kind: HashMap<Kind, usize> = HashMap::new();
    for violation in &report.violations {
        *by_kind.entry(violation.kind).or_default() += 1;
    }
    let mut by_kind: Vec<_> = by_kind.into_iter().collect();
    by_kind.sort_unstable();
    if !by_kind.is_empty() {
        println!("violations by kind: {by_kind:?}");
    }
    let mut by_spec: HashMap<u16, usize> = HashMap::new();
    for violation in &report.violations {
        *by_spec.entry(violation.call.f).or_default() += 1;
    }
    for spec in specs {
        if let Some(count) = by_spec.get(&spec.id) {
            println!("  {count} in {}", spec.describe());
        }
    }
    for violation in report.violations.iter().take(SHOWN) {
        show(violation, records, specs);
    }
    println!(
        "operations={} violations={} max_staleness_ms={:.3} bound_ms={:.3}",
        report.operations,
        report.violations.len(),
        ms(report.max_staleness_us),
        ms(u64::try_from(plan::near_bound().as_micros()).unwrap_or(u64::MAX)),
    );
}

/// Prints a violation with its function's options and its key's history around it.
fn show(violation: &Violation, records: &[Record], specs: &[Spec]) {
    let call = &violation.call;
    println!();
    println!("violation {:?}:", violation.kind);
    if let Some(spec) = specs.iter().find(|s| s.id == call.f) {
        println!("  function: {}", spec.describe());
    }
    println!("  call:  {}", Record::Call(*call).line());
    let from = match &violation.write {
        Some(write) => {
            println!("  write: {}", Record::Write(*write).line());
            write.start_us.min(call.value.started_us)
        }
        None => call.value.started_us,
    };
    let to = call.end_us;
    for fault in check::faults_between(records, from, to) {
        println!("  fault: {}", Record::Fault(fault.clone()).line());
    }
    println!("  history of the key from {from} to {to} (µs):");
    let mut history: Vec<(u64, String)> = records
        .iter()
        .filter_map(|record| {
            let (key, at) = match record {
                Record::Comp(c) => ((c.f, c.arg), c.started_us),
                Record::Call(c) => ((c.f, c.arg), c.start_us),
                Record::Write(w) => ((w.f, w.arg), w.start_us),
                Record::Fault(_) => return None,
            };
            (key == (call.f, call.arg) && (from..=to).contains(&at)).then(|| (at, record.line()))
        })
        .collect();
    history.sort();
    for (_, line) in history.iter().take(60) {
        println!("    {line}");
    }
    if history.len() > 60 {
        println!("    … {} more", history.len() - 60);
    }
}
