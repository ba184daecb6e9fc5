//! The behaviour suite against Redis: a private server per scenario, and one private
//! three-master cluster running every scenario in turn.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::RedisBackend;
use cache_memoize_tests::Fixture;
use cache_memoize_tests::server::{RedisCluster, RedisServer};

/// The fixtures' response timeout: the suite checks behaviour, not speed, and a reply
/// that a loaded machine delays past the default second would make a call fail open
/// (compute without the cache), as it should, and the scenario fail. The fault tests
/// (`redis_faults.rs`, `redis_breaker.rs`) test the timeouts themselves.
const PATIENT: Duration = Duration::from_secs(10);

fn on_private_server() -> Fixture {
    let server = RedisServer::start();
    match RedisBackend::builder([server.url()])
        .response_timeout(PATIENT)
        .connect()
    {
        Ok(backend) => Fixture::new(Arc::new(backend)).keeping(server),
        Err(err) => panic!("cannot connect to the test server: {err}"),
    }
}

fn on_cluster(cluster: &RedisCluster) -> Fixture {
    match RedisBackend::builder(cluster.urls())
        .cluster()
        .response_timeout(PATIENT)
        .connect()
    {
        Ok(backend) => Fixture::new(Arc::new(backend)),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    }
}

cache_memoize_tests::backend_suite!(on_private_server());

cache_memoize_tests::sequential_backend_suite!(
    whole_suite_on_a_three_master_cluster,
    RedisCluster::start(),
    |cluster| on_cluster(&cluster)
);

/// The same suite on a backend with a near cache: every scenario holds with copies
/// kept in the process.
mod near_cache {
    use std::sync::Arc;

    use cache_memoize::{NearCache, RedisBackend};
    use cache_memoize_tests::server::{RedisCluster, RedisServer};
    use cache_memoize_tests::{Fixture, wait_until};

    use super::PATIENT;

    /// Another client of the same server or cluster, without a near cache.
    fn plain(builder: cache_memoize::RedisBuilder) -> Arc<dyn cache_memoize::CacheBackend> {
        match builder.response_timeout(PATIENT).connect() {
            Ok(backend) => Arc::new(backend),
            Err(err) => panic!("cannot connect another client: {err}"),
        }
    }

    fn on_private_server_with_a_near_cache() -> Fixture {
        let server = RedisServer::start();
        let connected = RedisBackend::builder([server.url()])
            .response_timeout(PATIENT)
            .near_cache(NearCache::new())
            .connect();
        match connected {
            Ok(backend) => {
                wait_until("tracking is on", || backend.is_near_cache_live());
                let other = plain(RedisBackend::builder([server.url()]));
                Fixture::new(Arc::new(backend))
                    .with_other_client(other)
                    .keeping(server)
            }
            Err(err) => panic!("cannot connect to the test server: {err}"),
        }
    }

    fn on_cluster_with_a_near_cache(cluster: &RedisCluster) -> Fixture {
        let connected = RedisBackend::builder(cluster.urls())
            .cluster()
            .response_timeout(PATIENT)
            .near_cache(NearCache::new())
            .connect();
        match connected {
            Ok(backend) => {
                wait_until("tracking is on", || backend.is_near_cache_live());
                let other = plain(RedisBackend::builder(cluster.urls()).cluster());
                Fixture::new(Arc::new(backend)).with_other_client(other)
            }
            Err(err) => panic!("cannot connect to the test cluster: {err}"),
        }
    }

    cache_memoize_tests::backend_suite!(on_private_server_with_a_near_cache());

    cache_memoize_tests::sequential_backend_suite!(
        whole_suite_on_a_three_master_cluster_with_a_near_cache,
        RedisCluster::start(),
        |cluster| on_cluster_with_a_near_cache(&cluster)
    );
}
