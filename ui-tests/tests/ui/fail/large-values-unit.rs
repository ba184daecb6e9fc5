use cache_memoize::cache_memoize;

#[cache_memoize(large_values = "1 lots")]
fn unit(n: u32) -> Vec<u8> {
    vec![0; n as usize]
}

#[cache_memoize(large_values = 1.5)]
fn float(n: u32) -> Vec<u8> {
    vec![0; n as usize]
}

#[cache_memoize(large_values = "1MiB")]
fn rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
