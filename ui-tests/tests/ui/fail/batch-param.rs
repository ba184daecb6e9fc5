use std::collections::HashMap;

use cache_memoize::cache_memoize;

#[cache_memoize(batch, key = "user:{id}")]
fn borrowed_vec(ids: &Vec<u64>) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn mutable_slice(ids: &mut [u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn impl_trait(ids: impl IntoIterator<Item = u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn not_a_collection(ids: u64) -> HashMap<u64, String> {
    HashMap::from([(ids, ids.to_string())])
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Opaque;

#[cache_memoize(batch, key = "user:{id}")]
fn element_not_a_key_part(ids: Vec<Opaque>) -> HashMap<Opaque, String> {
    ids.into_iter().map(|id| (id, String::new())).collect()
}

fn main() {}
