//! `rediss://`: a private TLS-only server with a private certificate authority.
#![cfg(feature = "tls")]

use std::sync::Arc;

use cache_memoize::{Error, LockOptions, MemoizeOptions, RedisBackend, memoize, memoize_async};
use cache_memoize_tests::runtime;
use cache_memoize_tests::server::{RedisServer, free_port};

/// A CA and a server certificate for 127.0.0.1, as PEM files in a fresh directory.
struct Certificates {
    dir: std::path::PathBuf,
    ca: String,
}

fn certificates() -> Certificates {
    let made = (|| -> Result<Certificates, Box<dyn std::error::Error>> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let server_key = rcgen::KeyPair::generate()?;
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let server = server_params.signed_by(&server_key, &ca, &ca_key)?;
        let dir = std::env::temp_dir().join(format!(
            "cache-memoize-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("server.pem"), server.pem())?;
        std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
        Ok(Certificates { dir, ca: ca.pem() })
    })();
    made.unwrap_or_else(|err| panic!("cannot make test certificates: {err}"))
}

fn tls_server(certs: &Certificates) -> (RedisServer, u16) {
    let tls_port = free_port();
    let path = |name: &str| certs.dir.join(name).display().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    (server, tls_port)
}

#[test]
fn memoize_works_over_tls_with_a_private_ca() {
    let certs = certificates();
    let (_server, tls_port) = tls_server(&certs);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let backend = match RedisBackend::builder([url.as_str()])
        .root_certificate(certs.ca.as_bytes())
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("TLS connect failed: {err}"),
    };
    let opts = MemoizeOptions::new()
        .backend(backend)
        .lock(LockOptions::default());
    assert_eq!(memoize("tls", &opts, || 1_u32), 1);
    assert_eq!(memoize("tls", &opts, || 2_u32), 1, "stored over TLS");
    runtime().block_on(async {
        assert_eq!(memoize_async("tls", &opts, || async { 3_u32 }).await, 1);
    });
    let _ = std::fs::remove_dir_all(&certs.dir);
}

#[test]
fn an_untrusted_server_certificate_is_a_connect_error() {
    let certs = certificates();
    let (_server, tls_port) = tls_server(&certs);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let refused = RedisBackend::connect(&url);
    assert!(
        matches!(refused, Err(Error::Connect { .. })),
        "the private CA is not trusted by default"
    );
    let _ = std::fs::remove_dir_all(&certs.dir);
}
