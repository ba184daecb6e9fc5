//! Test helper: takes the memoize lock of a key on a Redis server, says `locked`, and
//! holds it until killed. Usage: `hold_lock <redis-url> <key> <lock-expire-ms>`.

use std::io::Write;
use std::time::Duration;

use cache_memoize::{CacheLock, RedisBackend, make_cache_key};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key, expire_ms] = args.as_slice() else {
        return Err("usage: hold_lock <redis-url> <key> <lock-expire-ms>".into());
    };
    let backend = RedisBackend::connect(url)?;
    let lock = CacheLock::for_key(&make_cache_key(key))
        .backend(std::sync::Arc::new(backend))
        .expire(Duration::from_millis(expire_ms.parse()?));
    let _guard = lock.acquire()?;
    println!("locked");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
