//! The per-value cost of sealing and opening a 10 KB value, five ways, interleaved in
//! one run (rounds alternate, best and median per value):
//!
//! - `rustcrypto`: aes-gcm 0.10 under HMAC-SHA256(value key, salt) (hmac 0.12), random
//!   bytes from `OsRng` — what `seal.rs` did before it moved to ring;
//! - `ring_hmac`: the same construction and the same bytes with ring 0.17 (`hmac`,
//!   `aead::AES_256_GCM`, `SystemRandom`) — what `seal.rs` does now;
//! - `ring_hkdf`: the per-value key by HKDF-Expand (PRK computed once) instead;
//! - `ring_fixed`: one AES-256-GCM key for every value with a counter nonce (no
//!   derivation, no random bytes: the floor of any scheme that amortises the
//!   derivation over a process);
//! - `derive_only` / `random_only`: ring's HMAC derivation plus key schedule, and 24
//!   random bytes, alone.
//!
//! `cargo run --release --manifest-path benches/seal_cost/Cargo.toml -- [rounds]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, KeyInit, OsRng};
use hmac::Mac;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SecureRandom;

const SIZE: usize = 10_050;
const PER_ROUND: u32 = 2_000;
const DERIVE: &[u8] = b"cache-memoize seal v1";
const AAD: &[u8] =
    b"cmz\x02seal\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0{0123456789abcdef0123456789abcdef}";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

struct Costs {
    seal: Vec<Duration>,
    open: Vec<Duration>,
}

fn rustcrypto(key: &HmacSha256, plain: &[u8]) -> (Duration, Duration) {
    let mut buf = plain.to_vec();
    let cipher = |salt: &[u8]| {
        let mut mac = key.clone();
        mac.update(DERIVE);
        mac.update(salt);
        aes_gcm::Aes256Gcm::new(&mac.finalize().into_bytes())
    };
    let started = Instant::now();
    let mut tags = Vec::with_capacity(PER_ROUND as usize);
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(plain);
        let mut random = [0u8; 24];
        OsRng.fill_bytes(&mut random);
        let (salt, nonce) = random.split_at(12);
        let tag = cipher(salt)
            .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(nonce), AAD, &mut buf)
            .expect("10 KB seals");
        tags.push((random, tag));
    }
    let seal = started.elapsed() / PER_ROUND;
    let sealed = buf.clone();
    let (random, tag) = tags.pop().expect("one");
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(&sealed);
        let (salt, nonce) = random.split_at(12);
        cipher(salt)
            .decrypt_in_place_detached(aes_gcm::Nonce::from_slice(nonce), AAD, &mut buf, &tag)
            .expect("opens");
    }
    let open = started.elapsed() / PER_ROUND;
    assert_eq!(buf, plain);
    (seal, open)
}

fn ring_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes"))
}

fn ring_hmac(
    key: &ring::hmac::Key,
    rng: &ring::rand::SystemRandom,
    plain: &[u8],
) -> (Duration, Duration) {
    let cipher = |salt: &[u8]| {
        let mut ctx = ring::hmac::Context::with_key(key);
        ctx.update(DERIVE);
        ctx.update(salt);
        ring_key(ctx.sign().as_ref())
    };
    ring_round(plain, rng, cipher)
}

fn ring_hkdf(
    prk: &ring::hkdf::Prk,
    rng: &ring::rand::SystemRandom,
    plain: &[u8],
) -> (Duration, Duration) {
    let cipher = |salt: &[u8]| {
        let info = [DERIVE, salt];
        let okm = prk.expand(&info, &AES_256_GCM).expect("one block");
        LessSafeKey::new(UnboundKey::from(okm))
    };
    ring_round(plain, rng, cipher)
}

fn ring_round(
    plain: &[u8],
    rng: &ring::rand::SystemRandom,
    cipher: impl Fn(&[u8]) -> LessSafeKey,
) -> (Duration, Duration) {
    let mut buf = plain.to_vec();
    let started = Instant::now();
    let mut last = None;
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(plain);
        let mut random = [0u8; 24];
        rng.fill(&mut random).expect("random bytes");
        let (salt, nonce) = random.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        let tag = cipher(salt)
            .seal_in_place_separate_tag(nonce, Aad::from(AAD), &mut buf)
            .expect("10 KB seals");
        last = Some((random, tag));
    }
    let seal = started.elapsed() / PER_ROUND;
    let sealed = buf.clone();
    let (random, tag) = last.expect("one");
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(&sealed);
        let (salt, nonce) = random.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        cipher(salt)
            .open_in_place_separate_tag(nonce, Aad::from(AAD), tag, &mut buf, 0..)
            .expect("opens");
    }
    let open = started.elapsed() / PER_ROUND;
    assert_eq!(buf, plain);
    (seal, open)
}

fn ring_fixed(key: &LessSafeKey, counter: &mut u64, plain: &[u8]) -> (Duration, Duration) {
    let mut buf = plain.to_vec();
    let nonce_of = |n: u64| {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_le_bytes());
        Nonce::assume_unique_for_key(bytes)
    };
    let started = Instant::now();
    let mut tag = None;
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(plain);
        *counter += 1;
        tag = Some(
            key.seal_in_place_separate_tag(nonce_of(*counter), Aad::from(AAD), &mut buf)
                .expect("10 KB seals"),
        );
    }
    let seal = started.elapsed() / PER_ROUND;
    let sealed = buf.clone();
    let tag = tag.expect("one");
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(&sealed);
        key.open_in_place_separate_tag(nonce_of(*counter), Aad::from(AAD), tag, &mut buf, 0..)
            .expect("opens");
    }
    let open = started.elapsed() / PER_ROUND;
    assert_eq!(buf, plain);
    (seal, open)
}

fn copy_only(plain: &[u8]) -> Duration {
    let mut buf = plain.to_vec();
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        buf.copy_from_slice(black_box(plain));
        black_box(&mut buf);
    }
    started.elapsed() / PER_ROUND
}

/// Both libraries write the same bytes for the same key, salt and nonce: values
/// sealed before the move to ring open after it.
fn same_bytes(rc_key: &HmacSha256, ring_key_: &ring::hmac::Key, plain: &[u8]) {
    let (salt, nonce) = ([3u8; 12], [5u8; 12]);
    let mut mac = rc_key.clone();
    mac.update(DERIVE);
    mac.update(&salt);
    let mut a = plain.to_vec();
    let tag_a = aes_gcm::Aes256Gcm::new(&mac.finalize().into_bytes())
        .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), AAD, &mut a)
        .expect("seals");
    let mut ctx = ring::hmac::Context::with_key(ring_key_);
    ctx.update(DERIVE);
    ctx.update(&salt);
    let mut b = plain.to_vec();
    let tag_b = ring_key(ctx.sign().as_ref())
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut b)
        .expect("seals");
    assert!(
        a == b && tag_a.as_slice() == tag_b.as_ref(),
        "the same stored bytes"
    );
    println!("aes-gcm and ring write the same bytes (ciphertext and tag)");
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let plain: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let value_key = [9u8; 32];
    let rc_key = <HmacSha256 as Mac>::new_from_slice(&value_key).expect("any length");
    let ring_hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &value_key);
    let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, &value_key);
    let fixed = ring_key(&value_key);
    let rng = ring::rand::SystemRandom::new();
    same_bytes(&rc_key, &ring_hmac_key, &plain);
    let mut counter = 0u64;
    let names = ["rustcrypto", "ring_hmac", "ring_hkdf", "ring_fixed"];
    let mut costs: Vec<Costs> = names
        .iter()
        .map(|_| Costs {
            seal: vec![],
            open: vec![],
        })
        .collect();
    let (mut derive, mut random, mut copy) = (vec![], vec![], vec![]);
    for round in 0..=rounds {
        let mut order = [0, 1, 2, 3];
        order.rotate_left(round % 4);
        for way in order {
            let (seal, open) = match way {
                0 => rustcrypto(&rc_key, &plain),
                1 => ring_hmac(&ring_hmac_key, &rng, &plain),
                2 => ring_hkdf(&prk, &rng, &plain),
                _ => ring_fixed(&fixed, &mut counter, &plain),
            };
            if round > 0 {
                costs[way].seal.push(seal);
                costs[way].open.push(open);
            }
        }
        let started = Instant::now();
        for i in 0..PER_ROUND {
            let mut ctx = ring::hmac::Context::with_key(&ring_hmac_key);
            ctx.update(DERIVE);
            ctx.update(&i.to_le_bytes());
            black_box(ring_key(ctx.sign().as_ref()));
        }
        let d = started.elapsed() / PER_ROUND;
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            let mut bytes = [0u8; 24];
            rng.fill(&mut bytes).expect("random bytes");
            black_box(bytes);
        }
        let r = started.elapsed() / PER_ROUND;
        let c = copy_only(&plain);
        if round > 0 {
            derive.push(d);
            random.push(r);
            copy.push(c);
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (us(v[0]), us(v[v.len() / 2]))
    };
    println!(
        "{SIZE} bytes, {rounds} rounds of {PER_ROUND}, microseconds per value (best / median); each includes a 10 KB copy:"
    );
    let (cb, cm) = stats(copy);
    println!("  copy_only              {cb:6.2} / {cm:6.2}");
    for (name, c) in names.iter().zip(costs) {
        let (sb, sm) = stats(c.seal);
        let (ob, om) = stats(c.open);
        println!(
            "  {name:<11} seal {sb:6.2} / {sm:6.2}   open {ob:6.2} / {om:6.2}   seal+open {:6.2} / {:6.2}",
            sb + ob,
            sm + om
        );
    }
    let (db, dm) = stats(derive);
    let (rb, rm) = stats(random);
    println!("  derive_only (ring hmac + key schedule) {db:5.2} / {dm:5.2}");
    println!("  random_only (24 bytes, SystemRandom)   {rb:5.2} / {rm:5.2}");
}
