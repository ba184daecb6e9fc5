//! Functions keep their docs, attributes, visibility, generics and where clauses.
use cache_memoize::cache_memoize;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Totals {
    pub orders: u32,
}

pub mod shop {
    use super::*;

    /// Documented, inlined, crate-visible.
    #[inline]
    #[cache_memoize(key = "totals:{day}")]
    pub(crate) fn totals(day: u32) -> Totals {
        Totals { orders: day }
    }
}

#[cache_memoize(key = "generic:{item}", skip(_scratch))]
pub fn describe<T>(item: T, mut _scratch: Vec<u8>) -> String
where
    T: std::fmt::Display,
{
    _scratch.push(1);
    item.to_string()
}

#[cache_memoize]
fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = text.parse()?;
    if n > 10 {
        return Ok(10);
    }
    Ok(n)
}

#[cache_memoize]
fn io_alias(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cache_memoize]
fn impl_arg(name: impl std::fmt::Display) -> String {
    name.to_string()
}

fn main() {
    let _ = shop::totals(1).orders;
    let _ = describe(1, Vec::new());
    let _ = parse("1");
    let _ = io_alias("/nonexistent");
    let _ = impl_arg("x");
    let _ = describe_cache_key(1, Vec::new());
}
