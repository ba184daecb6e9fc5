//! Backends for the near-cache tests: with or without a near cache, and one registered
//! for the process's memoized functions (the attribute's) once its tracking is on.

use std::sync::Arc;

use cache_memoize::{CacheBackend, NearCache, RedisBackend, set_shared_backend};

use crate::wait_until;

/// A backend on `urls` (a cluster when `cluster`), with `near` as its near cache.
///
/// # Panics
/// If it cannot connect.
pub fn connect(urls: Vec<String>, cluster: bool, near: Option<NearCache>) -> Arc<RedisBackend> {
    let builder = RedisBackend::builder(urls);
    let builder = if cluster { builder.cluster() } else { builder };
    let builder = match near {
        Some(near) => builder.near_cache(near),
        None => builder,
    };
    match builder.connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

/// A backend on `urls` with `near` as its near cache, registered for every memoized
/// function of the process, returned once its tracking is on.
///
/// # Panics
/// If it cannot connect, or tracking is not on within the wait's bound.
pub fn register_near(urls: Vec<String>, cluster: bool, near: NearCache) -> Arc<RedisBackend> {
    let backend = connect(urls, cluster, Some(near));
    set_shared_backend(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    wait_until("tracking is on", || backend.is_near_cache_live());
    backend
}

/// A backend on `cluster` with a near cache and a patient response timeout (10 s: a
/// loaded machine's late reply is not a failure here), returned once its tracking is
/// on.
///
/// # Panics
/// If it cannot connect, or tracking is not on within the wait's bound.
pub fn patient_on_cluster(cluster: &crate::server::RedisCluster) -> Arc<RedisBackend> {
    let connected = RedisBackend::builder(cluster.urls())
        .cluster()
        .response_timeout(std::time::Duration::from_secs(10))
        .near_cache(NearCache::new())
        .connect();
    let backend = match connected {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    };
    wait_until("tracking is on", || backend.is_near_cache_live());
    backend
}
