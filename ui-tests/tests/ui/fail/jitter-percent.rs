use cache_memoize::cache_memoize;

#[cache_memoize(jitter = "10")]
fn no_percent_sign() -> u32 { 1 }

#[cache_memoize(jitter = "95%")]
fn too_much() -> u32 { 1 }

#[cache_memoize(jitter = "-5%")]
fn negative() -> u32 { 1 }

#[cache_memoize(jitter = "ten%")]
fn not_a_number() -> u32 { 1 }

#[cache_memoize(jitter = 10)]
fn not_a_string() -> u32 { 1 }

fn main() {}
