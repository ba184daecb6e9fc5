//! Encryption at rest and the public `Backend` operations on a sealed backend: the
//! lock tokens' operations on the bytes as given; bytes written by hand read back as
//! written. Every server here is private to its test.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{Backend, Encryption, RedisBackend};
use cache_memoize_tests::server::RedisServer;

const SECRET: &[u8] = b"ssn-078-05-1120";

fn sealed(server: &RedisServer) -> Arc<RedisBackend> {
    let encryption = Encryption::new([0x4e; 32]).key(1, [0x11; 32]);
    match RedisBackend::builder([server.url()])
        .encryption(encryption)
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

/// Every raw value in the server.
fn raw_values(server: &RedisServer) -> Vec<Vec<u8>> {
    let mut conn = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut conn)
        .unwrap_or_default();
    keys.iter()
        .filter_map(|key| {
            redis::cmd("GET")
                .arg(key)
                .query::<Option<Vec<u8>>>(&mut conn)
                .ok()
                .flatten()
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The lock tokens' operations (`add`, `compare_and_extend`, `compare_and_delete`:
/// compared inside Redis) work on the bytes as given, sealed or not: a token added is
/// read back, extended and deleted by its own bytes (documented: under encryption they
/// are for tokens, not for secrets).
#[test]
fn token_operations_work_on_the_bytes_as_given() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    let token = b"4f1c2d";
    let ttl = Duration::from_secs(60);
    assert_eq!(backend.add("{lock:a}", token, ttl).ok(), Some(true));
    assert_eq!(
        backend.get("{lock:a}").ok().flatten().as_deref(),
        Some(&token[..]),
        "read back as written"
    );
    assert_eq!(
        backend
            .compare_and_extend("{lock:a}", token, Duration::from_secs(120))
            .ok(),
        Some(true)
    );
    assert_eq!(
        backend.compare_and_delete("{lock:a}", token).ok(),
        Some(true)
    );
    assert_eq!(backend.get("{lock:a}").ok().flatten(), None, "deleted");
}

/// Bytes written by hand that start like an envelope (the magic and a non-zero format
/// byte) but are not one (their checksum does not match) are sealed whole and read
/// back as written, not taken for an envelope whose checksum opening recomputes.
#[test]
fn bytes_written_by_hand_read_back_as_written() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    let written = b"cmz\x01 not an envelope, only starts like one".to_vec();
    if let Err(err) = backend.set("{raw}", &written, Duration::from_secs(60)) {
        panic!("{err}");
    }
    assert_eq!(backend.get("{raw}").ok().flatten(), Some(written));
}

/// A value written through the public `Backend::set` is sealed at rest, and read back.
#[test]
fn a_value_set_is_sealed_at_rest() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    if let Err(err) = backend.set("{profile:ann}", SECRET, Duration::from_secs(60)) {
        panic!("{err}");
    }
    assert_eq!(
        backend.get("{profile:ann}").ok().flatten().as_deref(),
        Some(SECRET),
        "read back"
    );
    let clear: Vec<_> = raw_values(&server)
        .into_iter()
        .filter(|value| contains(value, SECRET))
        .collect();
    assert!(clear.is_empty(), "in clear at rest: {clear:?}");
    assert!(!raw_values(&server).is_empty(), "something is stored");
}

/// A well-formed envelope of a fenced format (6, 7, 8) with fewer than 8 bytes after
/// its header, its checksum right.
fn short_fenced_envelope(format: u8) -> Vec<u8> {
    let mut bytes = b"cmz".to_vec();
    bytes.push(format);
    bytes.resize(20, 7);
    bytes.extend_from_slice(b"abc");
    // CRC-32 (IEEE) of "abc".
    bytes[16..20].copy_from_slice(&0x3524_41c2_u32.to_le_bytes());
    bytes
}

/// FINDING 1 through the public API: `set` then `get` of such bytes gives `Some([])`
/// (unreadable, a miss) under encryption, the bytes as written without it.
#[test]
fn a_short_fenced_envelope_set_by_hand_reads_back_as_written() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    let ttl = Duration::from_secs(60);
    for format in [6u8, 7, 8] {
        let written = short_fenced_envelope(format);
        let key = format!("{{hand:{format}}}");
        assert!(backend.set(&key, &written, ttl).is_ok());
        assert_eq!(
            backend.get(&key).ok().flatten(),
            Some(written),
            "format {format}"
        );
    }
}

/// FINDING 5: a token `add`ed (stored in clear, as documented) whose bytes start with
/// "cmz" reads back through `get` as empty (taken for a plaintext envelope, refused),
/// though `compare_and_delete` still matches it: `get` and the token operations
/// disagree on what is stored.
#[test]
fn a_token_starting_like_an_envelope_reads_back_as_added() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    let token = b"cmz-token-1";
    let ttl = Duration::from_secs(60);
    assert_eq!(backend.add("{lock:cmz}", token, ttl).ok(), Some(true));
    assert_eq!(
        backend.get("{lock:cmz}").ok().flatten().as_deref(),
        Some(&token[..])
    );
}
