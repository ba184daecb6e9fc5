//! Review 5: bytes written by hand through a sealed backend's public operations, read
//! back. Every server here is private to its test.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{Backend, Encryption, RedisBackend};
use cache_memoize_tests::server::RedisServer;

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
#[ignore = "finding 1: Backend::set/get of a short fenced-format envelope reads back empty under encryption"]
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
#[ignore = "finding 5: an add()ed token starting with \"cmz\" reads back empty through get() on a sealed backend"]
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
