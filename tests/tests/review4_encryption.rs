//! Adversarial review 4, encryption at rest: the public `Backend` operations on a
//! sealed backend. Failing tests are marked `#[ignore = "finding N: .."]`. Every
//! server here is private to its test.

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

/// Finding 2a: `add` is not sealed (ops.rs: "a lock's token"), so a value written
/// through the public `Backend::add` is stored in clear on an encrypted backend.
#[test]
#[ignore = "finding 2: Backend::add stores its value unsealed under encryption"]
fn a_value_added_is_sealed_at_rest() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    assert_eq!(
        backend
            .add("{profile:ann}", SECRET, Duration::from_secs(60))
            .ok(),
        Some(true)
    );
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
}

/// Finding 2b: `set` seals (random nonce) but `compare_and_delete` and
/// `compare_and_extend` compare the caller's clear bytes with the sealed ones inside
/// Redis: on an encrypted backend they never match a value written by `set`.
#[test]
#[ignore = "finding 2: compare_and_delete/extend never match a value set under encryption"]
fn compare_and_delete_matches_a_value_set_under_encryption() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    if let Err(err) = backend.set("{k}", b"v1", Duration::from_secs(60)) {
        panic!("{err}");
    }
    assert_eq!(
        backend
            .compare_and_extend("{k}", b"v1", Duration::from_secs(120))
            .ok(),
        Some(true),
        "the key holds v1: extended"
    );
    assert_eq!(
        backend.compare_and_delete("{k}", b"v1").ok(),
        Some(true),
        "the key holds v1: deleted"
    );
}

/// Finding 2c: bytes written by hand that start with the envelope's magic and a
/// non-zero format byte are taken for an envelope: their bytes 16..20 come back as a
/// recomputed checksum, not as written.
#[test]
#[ignore = "finding 2: Backend::set/get under encryption alters bytes that start with `cmz`"]
fn bytes_written_by_hand_read_back_as_written() {
    let server = RedisServer::start();
    let backend = sealed(&server);
    let written = b"cmz\x01 not an envelope, only starts like one".to_vec();
    if let Err(err) = backend.set("{raw}", &written, Duration::from_secs(60)) {
        panic!("{err}");
    }
    assert_eq!(backend.get("{raw}").ok().flatten(), Some(written));
}

/// Finding 4: during a rolling deploy that turns encryption on (or changes the name
/// key), a process with the old settings invalidates under the old names: the value a
/// process with the new settings stored stays, and calls that begin after the
/// invalidation are served it until it expires. Nothing in the README's encryption
/// section says a fleet must switch at once (or invalidate under both settings).
#[test]
#[ignore = "finding 4: an invalidate from a process without encryption misses the values of one with it"]
fn an_invalidation_from_a_process_without_encryption_reaches_the_encrypted_value() {
    use cache_memoize::{CacheBackend, MemoizeOptions, make_cache_key, memoize};
    let server = RedisServer::start();
    let encrypted = sealed(&server);
    let plain = match RedisBackend::connect(&server.url()) {
        Ok(backend) => backend,
        Err(err) => panic!("{err}"),
    };
    let key = format!("rolling:{}", uuid::Uuid::new_v4().simple());
    let opts = MemoizeOptions::new().backend(Arc::clone(&encrypted) as Arc<dyn CacheBackend>);
    assert_eq!(memoize(&key, &opts, || 1_u32), 1);
    let stored = make_cache_key(&key);
    if let Err(err) = plain.invalidate(stored.as_str(), &stored.lock_key()) {
        panic!("{err}");
    }
    assert_eq!(
        memoize(&key, &opts, || 2_u32),
        2,
        "a call that began after the invalidation"
    );
}
