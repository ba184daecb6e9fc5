//! Every kind of argument is a key part; every option of issue 10 compiles.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use cache_memoize::cache_memoize;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
struct Query {
    text: String,
}

#[derive(Serialize)]
struct Filter {
    tags: Vec<String>,
}

#[cache_memoize]
fn containers(
    limit: Option<u32>,
    tags: Vec<String>,
    pair: (u8, u8),
    bytes: &[u8],
    nested: &[Option<Vec<u16>>],
    map: HashMap<String, u32>,
    sorted: BTreeMap<u8, bool>,
    fixed: [u8; 4],
) -> usize {
    limit.map_or(0, |l| l as usize)
        + tags.len()
        + usize::from(pair.0)
        + bytes.len()
        + nested.len()
        + map.len()
        + sorted.len()
        + fixed.len()
}

#[cache_memoize(key = "search:{query:?}:{filter}")]
fn search(query: &Query, filter: &Filter) -> Vec<String> {
    vec![query.text.clone(); filter.tags.len()]
}

#[cache_memoize(key = "adj:{a}{b}", expire = "1m")]
fn adjacent(a: &str, b: &str) -> String {
    format!("{a}{b}")
}

#[cache_memoize(key = "user:{id}", skip(conn))]
fn user(conn: &Connection, id: u64) -> String {
    conn.name(id)
}

struct Connection;

impl Connection {
    fn name(&self, id: u64) -> String {
        format!("user {id}")
    }
}

#[cache_memoize]
fn parse_as<T: std::str::FromStr + Serialize + for<'de> Deserialize<'de> + Default>(s: &str) -> T {
    s.parse().unwrap_or_default()
}

#[cache_memoize]
fn shown(x: impl Display) -> String {
    x.to_string()
}

#[cache_memoize]
fn sized<const N: usize>(x: [u8; N]) -> usize {
    x.len()
}

#[derive(Debug, Serialize, Deserialize)]
struct AppError(String);

type AppResult<T> = Result<T, AppError>;

#[cache_memoize]
fn fallible(n: u32) -> AppResult<u32> {
    if n == 0 {
        return Err(AppError("zero".into()));
    }
    Ok(n)
}

#[cache_memoize(cache_none = false)]
fn maybe(n: u32) -> Option<u32> {
    (n > 0).then_some(n)
}

#[cache_memoize(codec = "msgpack")]
fn self_described(n: u32) -> Tagged {
    Tagged::Number { n }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum Tagged {
    Number { n: u32 },
}

trait Shape {
    fn area(&self, scale: u32) -> u64;
}

struct Square(u32);

impl Display for Square {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "square-{}", self.0)
    }
}

impl Shape for Square {
    #[cache_memoize(companions = false)]
    fn area(&self, scale: u32) -> u64 {
        u64::from(self.0 * self.0 * scale)
    }
}

struct Account {
    id: u64,
}

impl Account {
    #[cache_memoize(key = "account:{self.id}:balance")]
    fn balance(&self) -> i64 {
        self.id as i64
    }

    #[cache_memoize(key = "rates", skip(self))]
    fn rates(&self) -> Vec<u32> {
        vec![1, 2]
    }
}

fn main() {
    let _ = containers(
        Some(1),
        vec![],
        (1, 2),
        b"x",
        &[None],
        HashMap::new(),
        BTreeMap::new(),
        [0; 4],
    );
    let _ = search(&Query { text: "q".into() }, &Filter { tags: vec![] });
    let _ = adjacent("a", "b");
    let _ = adjacent_cache_key("a", "b");
    let _ = user(&Connection, 1);
    let _ = user_cache_key(&Connection, 1);
    let _: u32 = parse_as("1");
    let _ = parse_as_cache_key::<String>("1");
    let _ = shown(1.5);
    let _ = sized([1, 2]);
    let _ = fallible(0);
    let _ = maybe(0);
    let _ = self_described(1);
    let _ = Square(2).area(3);
    let account = Account { id: 1 };
    let _ = account.balance();
    let _ = account.balance_cache_key();
    let _ = account.rates();
}
