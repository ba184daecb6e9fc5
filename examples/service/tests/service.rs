//! The example service against a private Redis: concurrent requests for one report
//! compute it once, and `/metrics` says so (the service's counter and cache-memoize's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use cache_memoize::RedisBackend;
use cache_memoize_example_service::app;
use cache_memoize_tests::runtime;
use cache_memoize_tests::server::RedisServer;
use metrics_exporter_prometheus::PrometheusBuilder;

/// `GET path` over HTTP/1.1 on a connection of its own; the body, or the panic that
/// says what failed.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut response = String::new();
    let sent = TcpStream::connect(addr).and_then(|mut stream| {
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        stream.read_to_string(&mut response)
    });
    if let Err(err) = sent {
        panic!("GET {path} failed: {err}");
    }
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => body.to_owned(),
        _ => panic!("GET {path}: {response}"),
    }
}

#[test]
fn concurrent_requests_compute_the_report_once_and_metrics_count_it() {
    let server = RedisServer::start();
    match RedisBackend::connect(&server.url()) {
        Ok(backend) => cache_memoize::set_backend(backend),
        Err(err) => panic!("cannot connect to the test server: {err}"),
    }
    let metrics = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(err) => panic!("cannot install the Prometheus recorder: {err}"),
    };
    let runtime = runtime();
    let listener = match runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(listener) => listener,
        Err(err) => panic!("cannot listen: {err}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => panic!("no local address: {err}"),
    };
    runtime.spawn(async move { axum::serve(listener, app(metrics)).await });

    let bodies: Vec<String> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..16)
            .map(|_| scope.spawn(move || get(addr, "/report/7")))
            .collect();
        requests
            .into_iter()
            .map(|request| {
                request
                    .join()
                    .unwrap_or_else(|_| panic!("a request panicked"))
            })
            .collect()
    });
    for body in &bodies {
        assert_eq!(body, r#"{"day":7,"total":7000}"#);
    }
    let exported = get(addr, "/metrics");
    assert!(
        exported
            .lines()
            .any(|line| line == "report_computations_total 1"),
        "{exported}"
    );
    // cache-memoize's own counter (its `metrics` feature) says the same. (Its
    // `function` label is not asserted: the attribute does not fill it in yet.)
    assert!(
        exported
            .lines()
            .any(|line| line.starts_with("cache_memoize_calls_total{")
                && line.contains("outcome=\"computed\"")
                && line.ends_with(" 1")),
        "{exported}"
    );
}
