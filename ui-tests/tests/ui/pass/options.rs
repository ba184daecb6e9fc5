use cache_memoize::cache_memoize;

#[cache_memoize(key = "all:{a}", expire = "1m30s", version = 2, force_overwrite, lock(timeout = "5s", expire = "30s", retry = "100ms"))]
fn every_option(a: u32) -> u32 {
    a
}

#[cache_memoize(lock)]
fn bare_lock(a: u32) -> u32 {
    a
}

#[cache_memoize(lock(blocking = false, expire = "1h"), expire = "30d")]
fn non_blocking(a: u32) -> u32 {
    a
}

#[cache_memoize(key = "literal {{braces}}", expire = "250ms",)]
fn trailing_comma() -> String {
    String::new()
}

#[cache_memoize()]
fn empty_parens() -> u8 {
    1
}

#[cache_memoize(large_values = "512KiB")]
fn large_with_unit(n: u32) -> Vec<u8> {
    vec![0; n as usize]
}

#[cache_memoize(large_values = 65536)]
fn large_in_bytes(n: u32) -> Vec<u8> {
    vec![0; n as usize]
}

fn main() {
    let _ = (every_option(1), bare_lock(1), non_blocking(1), trailing_comma(), empty_parens());
    let _ = (large_with_unit(1), large_in_bytes(1));
    let _ = every_option_cache_key(1);
    let _ = every_option_invalidate(1);
}
