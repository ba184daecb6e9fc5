use std::collections::{BTreeMap, HashMap};

use cache_memoize::cache_memoize;

#[cache_memoize(batch, key = "user:{id}")]
fn returns_vec(ids: Vec<u64>) -> Vec<String> {
    ids.into_iter().map(|id| id.to_string()).collect()
}

type Users = HashMap<u64, String>;

#[cache_memoize(batch, key = "user:{id}")]
fn returns_alias(ids: Vec<u64>) -> Users {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn returns_btree(ids: Vec<u64>) -> BTreeMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn returns_iterator(ids: Vec<u64>) -> impl Iterator<Item = (u64, String)> {
    ids.into_iter().map(|id| (id, id.to_string()))
}

#[cache_memoize(batch, key = "user:{id}")]
fn other_key_type(ids: Vec<u64>) -> HashMap<u32, String> {
    ids.into_iter().map(|id| (id as u32, id.to_string())).collect()
}

struct Opaque;

#[cache_memoize(batch, key = "user:{id}")]
fn value_not_serializable(ids: Vec<u64>) -> HashMap<u64, Opaque> {
    ids.into_iter().map(|id| (id, Opaque)).collect()
}

fn main() {}
