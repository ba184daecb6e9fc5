//! The example service (`src/service.rs`): a report memoized in Redis, served over HTTP,
//! with Prometheus metrics on `/metrics`.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379/ LISTEN=127.0.0.1:3000 \
//!     cargo run --release --example service
//! curl http://127.0.0.1:3000/report/7     # 200 ms the first time, a hit after
//! curl http://127.0.0.1:3000/metrics
//! ```

use cache_memoize::RedisBackend;
use cache_memoize_examples::service::app;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // Connecting blocks (one PING): done once, before serving.
    let backend = tokio::task::spawn_blocking(move || RedisBackend::connect(&url)).await??;
    cache_memoize::set_backend(backend);
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen}");
    axum::serve(listener, app(metrics)).await?;
    Ok(())
}
