use cache_memoize::cache_memoize;

#[cache_memoize(key = "a:{n}", lock(timeout = "1s"))]
async fn square(n: u64) -> u64 {
    tokio::task::yield_now().await;
    n * n
}

#[cache_memoize(key = "b:{n}")]
async fn checked(n: i64) -> Result<i64, String> {
    if n < 0 {
        return Err("negative".to_owned());
    }
    let doubled = n.checked_mul(2).ok_or("overflow")?;
    Ok(doubled)
}

#[cache_memoize]
async fn borrowed(name: &str) -> String {
    name.to_uppercase()
}

fn assert_send<F: std::future::Future + Send>(future: F) -> F {
    future
}

#[tokio::main]
async fn main() {
    let _ = assert_send(square(2)).await;
    let _ = checked(2).await;
    let _ = borrowed("x").await;
    let _ = tokio::spawn(square(3)).await;
}
