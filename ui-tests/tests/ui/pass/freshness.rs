use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cache_memoize::{Clock, cache_memoize};

// Owned arguments: a stale value is refreshed in the background.
#[cache_memoize(key = "rate:{currency}", expire = "1m", stale = "1h")]
fn rate(currency: String) -> u32 {
    currency.len() as u32
}

#[cache_memoize(expire = "1m", stale = "1h", fail_safe = "10s", beta = 1.0, jitter = "10%", lock)]
fn every_freshness_option(a: u32, b: Vec<String>) -> Result<u32, String> {
    Ok(a + b.len() as u32)
}

#[cache_memoize(beta = 2, jitter = "2.5%")]
fn early_only(a: u64) -> u64 {
    a
}

#[cache_memoize(stale = "5m", cache_none = false)]
fn maybe(a: u8) -> Option<u8> {
    (a > 0).then_some(a)
}

// `'static` references and function pointers move to the background too.
#[cache_memoize(stale = "5m", skip(f))]
fn label(name: &'static str, f: fn(&str) -> usize) -> usize {
    f(name)
}

// A generic argument bounded for the background refresh.
#[cache_memoize(stale = "5m")]
fn shown<T: std::fmt::Display + Send + 'static>(value: T) -> String {
    value.to_string()
}

// A reference: refreshed inline, by the caller that finds the value stale.
#[cache_memoize(stale = "5m")]
fn length(text: &str) -> usize {
    text.len()
}

// A value that cannot move to another thread, refreshed inline on request.
#[cache_memoize(stale = "5m", refresh = "inline", skip(counter))]
fn counted(counter: Rc<u32>, n: u32) -> u32 {
    *counter + n
}

struct Account {
    id: u64,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)
    }
}

impl Account {
    #[cache_memoize(key = "balance:{self.id}", stale = "10m")]
    fn balance(&self) -> i64 {
        self.id as i64
    }

    #[cache_memoize(key = "closing:{self.id}", stale = "10m")]
    fn closing(self) -> i64 {
        -(self.id as i64)
    }

    #[cache_memoize(key = "shared:{self}", stale = "10m", beta = 0.5)]
    fn shared(self: Arc<Self>) -> u64 {
        self.id
    }
}

struct Ahead;

impl Clock for Ahead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(1)
    }
}

fn ahead() -> Arc<dyn Clock> {
    Arc::new(Ahead)
}

mod clocks {
    pub fn system() -> std::sync::Arc<dyn cache_memoize::Clock> {
        super::ahead()
    }
}

#[cache_memoize(expire = "1m", stale = "1m", clock = ahead)]
fn with_clock(a: u32) -> u32 {
    a
}

#[cache_memoize(expire = "1m", clock = clocks::system)]
fn without_stale(n: u32) -> u32 {
    n
}

#[cache_memoize(expire = "1m", stale = "1h")]
async fn fetch(id: u32) -> Result<String, String> {
    Ok(format!("item {id}"))
}

#[cache_memoize(stale = "1h", cache_none = false)]
async fn find(id: u32) -> Option<u32> {
    Some(id)
}

#[cache_memoize(stale = "1h")]
async fn borrowed(name: &str) -> String {
    name.to_owned()
}

#[cache_memoize(stale = "1h", refresh = "inline")]
async fn inline_async(id: u32) -> u32 {
    id
}

#[tokio::main]
async fn main() {
    let _ = (rate("eur".to_owned()), every_freshness_option(1, vec![]), early_only(1), maybe(1));
    let _ = (label("a", str::len), shown(1_u8), length("x"), counted(Rc::new(1), 2));
    let _ = (Account { id: 1 }.balance(), Account { id: 2 }.closing(), Arc::new(Account { id: 3 }).shared());
    let _ = (with_clock(1), without_stale(2));
    let _ = (fetch(1).await, find(1).await, borrowed("x").await, inline_async(1).await);
}
