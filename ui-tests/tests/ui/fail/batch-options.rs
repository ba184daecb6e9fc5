use std::collections::HashMap;

use cache_memoize::cache_memoize;

#[cache_memoize(batch, key = "user:{id}", cache_none = false)]
fn with_cache_none(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User;

#[cache_memoize(batch, key = "user:{id}", keep_decoded)]
fn with_keep_decoded(ids: Vec<u64>) -> HashMap<u64, User> {
    ids.into_iter().map(|id| (id, User)).collect()
}

fn main() {}
