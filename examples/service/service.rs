//! The example service (`src/lib.rs`): a report memoized in Redis, served over HTTP,
//! with Prometheus metrics on `/metrics`.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379/ LISTEN=127.0.0.1:3000 \
//!     cargo run --release --example service
//! curl http://127.0.0.1:3000/report/7     # 200 ms the first time, a hit after
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! Quick mode (`CACHE_MEMOIZE_QUICK=1`, what CI runs): the service starts on a free port
//! (a private `redis-server` unless `REDIS_URL` is set), serves 8 concurrent requests
//! for one report and one for `/metrics`, checks the answers, shuts down and prints
//! `requests=<n> report_computations=<n>` (the service's own counter: 1).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use cache_memoize::RedisBackend;
use cache_memoize_example_service::app;
use cache_memoize_tests::server::RedisServer;
use metrics_exporter_prometheus::PrometheusBuilder;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Whether this is quick mode (`CACHE_MEMOIZE_QUICK=1`, what CI runs; see
/// `harness/src/quick.rs` for the convention every example follows).
fn quick() -> bool {
    std::env::var_os("CACHE_MEMOIZE_QUICK").is_some_and(|v| v == "1")
}

/// Concurrent requests for one report in quick mode.
const QUICK_REQUESTS: usize = 8;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let quick = quick();
    let (_private, url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) if quick => {
            let server = tokio::task::spawn_blocking(RedisServer::start).await?;
            let url = server.url();
            (Some(server), url)
        }
        Err(_) => (None, "redis://127.0.0.1:6379/".into()),
    };
    let default_listen = if quick {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| default_listen.into());
    // Connecting blocks (one PING): done once, before serving.
    let backend = tokio::task::spawn_blocking(move || RedisBackend::connect(&url)).await??;
    cache_memoize::set_backend(backend);
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    if !quick {
        axum::serve(listener, app(metrics)).await?;
        return Ok(());
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app(metrics))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let exercised = tokio::task::spawn_blocking(move || exercise(addr)).await?;
    let _ = stop.send(());
    serving.await??;
    let computations = exercised?;
    println!("requests={QUICK_REQUESTS} report_computations={computations}");
    Ok(())
}

/// Quick mode's client: concurrent requests for one report, then `/metrics`; the
/// service's count of report computations.
fn exercise(addr: SocketAddr) -> Result<u64, Failure> {
    let bodies: Vec<Result<String, Failure>> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..QUICK_REQUESTS)
            .map(|_| scope.spawn(move || get(addr, "/report/7")))
            .collect();
        requests
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err("a request panicked".into()))
            })
            .collect()
    });
    for body in bodies {
        let body = body?;
        if body != r#"{"day":7,"total":7000}"# {
            return Err(format!("GET /report/7 answered {body}").into());
        }
    }
    let exported = get(addr, "/metrics")?;
    println!("GET /report/7 x {QUICK_REQUESTS}: every answer right");
    exported
        .lines()
        .find_map(|line| line.strip_prefix("report_computations_total "))
        .ok_or("/metrics has no report_computations_total")?
        .trim()
        .parse()
        .map_err(Into::into)
}

/// `GET path` over HTTP/1.1 on a connection of its own: the body of a 200.
fn get(addr: SocketAddr, path: &str) -> Result<String, Failure> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("GET {path}: {response}").into()),
    }
}
