use std::collections::HashMap;

use cache_memoize::cache_memoize;

#[cache_memoize(tags = "user:{id}")]
fn not_a_list(id: u32) -> u32 { id }

#[cache_memoize(tags = ["user:{user}"])]
fn unknown_parameter(id: u32) -> u32 { id }

#[cache_memoize(batch, key = "user:{id}", tags = ["user:{user}"])]
fn a_batch_naming_no_element(ids: Vec<u32>) -> HashMap<u32, u32> { ids.into_iter().map(|id| (id, id)).collect() }

fn main() {}
