//! Review of `keep_decoded` on Redis Cluster: kept values on keys over every master
//! follow writes by another process, and a killed invalidation connection of one master
//! leaves no kept value served after a write it did not report.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, MemoizeOptions, NearCache, RedisBackend, cache_memoize, make_cache_key, memoize,
};
use cache_memoize_tests::server::{RedisCluster, kill_tracking_client};
use cache_memoize_tests::{near, wait_until};

#[cache_memoize(key = "kc:{id}", shared_key, expire = "1h", keep_decoded)]
fn kept(id: u32) -> String {
    format!("computed {id}")
}

fn write(writer: &Arc<RedisBackend>, id: u32, value: &str) {
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(writer) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .force_overwrite(true);
    let stored: String = memoize(&format!("kc:{id}"), &opts, || value.to_owned());
    assert_eq!(stored, value);
}

/// Waits until `kept(id)` is answered near (twenty hits counted near in a row).
fn until_near(reader: &Arc<RedisBackend>, id: u32, expected: &str) {
    wait_until("hits are near", || {
        let hits = reader.near_cache_hits();
        for _ in 0..20 {
            assert_eq!(kept(id), expected);
        }
        reader.near_cache_hits() >= hits + 20
    });
}

#[test]
fn on_a_cluster_kept_values_follow_writes_and_killed_links() {
    let _registry = cache_memoize_tests::registry_guard();
    let cluster = RedisCluster::start();
    let reader = near::register_near(cluster.urls(), true, NearCache::new());
    let writer = near::connect(cluster.urls(), true, None);
    let owners: std::collections::BTreeSet<usize> = (0..12)
        .map(|id| cluster.owner_of(make_cache_key(&format!("kc:{id}")).as_str()))
        .collect();
    assert_eq!(owners.len(), 3, "the keys cover every master");
    for id in 0..12 {
        write(&writer, id, "v1");
        until_near(&reader, id, "v1");
        write(&writer, id, "v2");
        wait_until("the reader sees v2", || kept(id) == "v2");
        for _ in 0..20 {
            assert_eq!(kept(id), "v2", "never back to the kept v1");
        }
    }
    for id in 0..6 {
        let owner = cluster.owner_of(make_cache_key(&format!("kc:{id}")).as_str());
        wait_until("tracking is on", || reader.is_near_cache_live());
        write(&writer, id, "old");
        wait_until("the reader sees old", || kept(id) == "old");
        until_near(&reader, id, "old");
        kill_tracking_client(&mut cluster.connection(owner));
        write(&writer, id, "new");
        wait_until("the reader sees the new value", || kept(id) == "new");
        for _ in 0..20 {
            assert_eq!(kept(id), "new", "never back to the kept value");
        }
    }
}
