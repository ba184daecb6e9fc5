//! Test helper: one process of a multi-process stampede. Connects, says `ready`, waits
//! for a line on stdin, then releases its threads together on one memoized key whose
//! computation counts itself with `INCR <counter>` in Redis; prints each caller's value.
//! Usage: `stampede_worker <redis-url> <key> <threads> <counter-key>`.

use std::io::{BufRead, Write};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_memoize::{LockOptions, MemoizeOptions, RedisBackend, memoize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, threads, counter] = args.as_slice() else {
        return Err("usage: stampede_worker <redis-url> <key> <threads> <counter-key>".into());
    };
    let threads: usize = threads.parse()?;
    let opts = MemoizeOptions::new()
        .backend(Arc::new(RedisBackend::connect(url)?))
        .lock(LockOptions::default());
    let client = redis::Client::open(url.as_str())?;
    println!("ready");
    std::io::stdout().flush()?;
    std::io::stdin().lock().read_line(&mut String::new())?;

    let start = Arc::new(Barrier::new(threads));
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (opts, key, counter, client, start) = (
                opts.clone(),
                key.clone(),
                counter.clone(),
                client.clone(),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                start.wait();
                memoize(&key, &opts, || {
                    let computes: redis::RedisResult<u64> = client
                        .get_connection()
                        .and_then(|mut c| redis::cmd("INCR").arg(&counter).query(&mut c));
                    // Long enough that every other caller arrives while this one computes.
                    std::thread::sleep(Duration::from_millis(200));
                    format!("value after {} compute(s)", computes.unwrap_or(0))
                })
            })
        })
        .collect();
    for caller in callers {
        match caller.join() {
            Ok(value) => println!("{value}"),
            Err(_) => println!("panicked"),
        }
    }
    Ok(())
}
