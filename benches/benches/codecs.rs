//! The self-describing codec (`codec = "msgpack"`) against the default (bincode), on
//! the in-process store's hit path, where decoding is most of the cost: a string-heavy
//! value (the hit benches' `Report`) and a record-like one (rows of small fields, whose
//! field names `MessagePack` writes in every row). Prints each encoding's size once.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{Codec, MemoizeOptions, MemoryBackend, memoize};
use cache_memoize_benches::{Report, report};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

/// One row of a record-like value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
    score: f64,
    active: bool,
}

fn rows(n: u32) -> Vec<Row> {
    (0..n)
        .map(|id| Row {
            id: u64::from(id),
            name: format!("row {id}"),
            score: f64::from(id) / 3.0,
            active: id % 2 == 0,
        })
        .collect()
}

const CODECS: [(&str, Codec); 2] = [("bincode", Codec::Bincode), ("msgpack", Codec::MessagePack)];

fn stored_len(backend: &MemoryBackend, key: &str) -> usize {
    cache_memoize::Backend::get(backend, cache_memoize::make_cache_key(key).as_str())
        .ok()
        .flatten()
        .map_or(0, |bytes| bytes.len())
}

fn hits(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/memory_hit");
    for (name, codec) in CODECS {
        for size in [100, 10_000] {
            let backend = Arc::new(MemoryBackend::new());
            let opts = MemoizeOptions::new().backend(backend.clone()).codec(codec);
            let key = format!("report:{size}");
            let _: Report = memoize(&key, &opts, || report(size));
            eprintln!(
                "{name} report {size} B: {} bytes stored",
                stored_len(&backend, &key)
            );
            group.bench_function(BenchmarkId::new(format!("{name}/report"), size), |b| {
                b.iter(|| memoize::<Report, _>(&key, &opts, || unreachable!("a hit")));
            });
        }
        let backend = Arc::new(MemoryBackend::new());
        let opts = MemoizeOptions::new().backend(backend.clone()).codec(codec);
        let _: Vec<Row> = memoize("rows", &opts, || rows(100));
        eprintln!(
            "{name} 100 rows: {} bytes stored",
            stored_len(&backend, "rows")
        );
        group.bench_function(BenchmarkId::new(format!("{name}/rows"), 100), |b| {
            b.iter(|| memoize::<Vec<Row>, _>("rows", &opts, || unreachable!("a hit")));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hits
}
criterion_main!(benches);
