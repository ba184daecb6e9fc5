//! Private `redis-server` processes for tests: started on free ports, killed on drop.
//! Tests never touch a server they did not start.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this process started.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

/// A port nothing listens on right now.
///
/// # Panics
/// If the OS has no free port.
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(err) => panic!("no free port: {err}"),
    }
}

/// A port nothing listens on whose cluster bus port (the port + 10,000, which a
/// cluster node also binds) is free and in range too.
///
/// # Panics
/// If the OS has no such port.
pub fn free_cluster_port() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        let bus_free = port
            .checked_add(10_000)
            .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            return port;
        }
    }
    panic!("no free port with a free cluster bus port")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    ///
    /// # Panics
    /// If `redis-server` is missing or does not come up.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on_free_ports(extra, free_port)
    }

    /// Starts a server on a port `pick` chooses, trying another port when the server
    /// does not come up: a port found free may be taken before the server binds it (by
    /// another test's server, or by an outgoing connection's ephemeral port, which
    /// shares the range).
    fn start_on_free_ports(extra: &[&str], pick: fn() -> u16) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = pick();
            let dir = std::env::temp_dir()
                .join(format!("cache-memoize-redis-{}-{port}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let mut server = Self {
                port,
                child: None,
                dir,
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last = err,
            }
        }
        panic!("{last} (tried 5 ports)")
    }

    /// Starts a replica of `master` (`--replicaof`) and waits until it has synced.
    ///
    /// # Panics
    /// If it does not come up or sync.
    pub fn start_replica_of(master: &Self) -> Self {
        let port = master.port().to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port]);
        let mut conn = replica.connection();
        wait_for("the replica has synced", || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut conn)
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        replica
    }

    /// Promotes this replica to a master by hand (`REPLICAOF NO ONE`).
    ///
    /// # Panics
    /// If the server refuses.
    pub fn promote(&self) {
        let _: () = query(
            &mut self.connection(),
            redis::cmd("REPLICAOF").arg("NO").arg("ONE"),
        );
    }

    /// What the server says it is (`ROLE`: `master`, `slave`), if it answers.
    pub fn role(&self) -> Option<String> {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match role.first() {
            Some(redis::Value::BulkString(kind)) => Some(String::from_utf8_lossy(kind).into()),
            _ => None,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plain connection to the server, for inspecting it behind the backend's back.
    ///
    /// # Panics
    /// If the server does not answer.
    pub fn connection(&self) -> redis::Connection {
        let opened = redis::Client::open(self.url()).and_then(|c| c.get_connection());
        match opened {
            Ok(conn) => conn,
            Err(err) => panic!("cannot connect to the test server: {err}"),
        }
    }

    /// Whether the server runs (it was not [`kill`](Self::kill)ed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stalls the server (SIGSTOP): it keeps its port and accepts connections (the
    /// kernel completes the handshake) but answers nothing until [`resume`](Self::resume).
    ///
    /// # Panics
    /// If the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server run again (SIGCONT).
    ///
    /// # Panics
    /// If the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let Some(child) = &self.child else {
            panic!("the test server is not running");
        };
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status();
        match sent {
            Ok(status) if status.success() => {}
            other => panic!("kill {signal} on the test server failed: {other:?}"),
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    ///
    /// # Panics
    /// If it does not come up.
    pub fn restart(&mut self) {
        if let Err(err) = self.spawn() {
            panic!("{err}");
        }
    }

    /// Starts `redis-server` on this server's port and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(err) => panic!("cannot start redis-server (install Debian's redis-server): {err}"),
        }
        self.wait_until_answering()
    }

    fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A NOAUTH reply (a server started with a password) answers too.
            let ready = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && match redis::Client::open(self.url())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                {
                    Ok(_) => true,
                    Err(err) => err.code() == Some("NOAUTH"),
                };
            if ready {
                return Ok(());
            }
            // A server that exited (its port was taken meanwhile) will not come up.
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| !matches!(child.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not come up",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel (`redis-server <config> --sentinel`, the binary Debian's
/// `redis-server` package ships) watching one master, with short failure detection
/// (`down-after-milliseconds`) so that a failover takes about a second. Killed on drop.
pub struct RedisSentinel {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts a Sentinel watching `master` as `name` (quorum 1), with its replicas
    /// discovered, and waits until it knows `replicas` of them.
    ///
    /// # Panics
    /// If it does not come up or does not discover the replicas.
    pub fn start(name: &str, master: &RedisServer, replicas: usize) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "cache-memoize-sentinel-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let config = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {name} 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds {name} 200\n\
             sentinel failover-timeout {name} 2000\n\
             sentinel parallel-syncs {name} 1\n",
            dir = dir.display(),
            master = master.port(),
        );
        if let Err(err) = std::fs::write(&config, text) {
            panic!("cannot write the Sentinel's configuration: {err}");
        }
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => panic!("cannot start redis-server --sentinel: {err}"),
        };
        let sentinel = Self { port, child, dir };
        wait_for("the Sentinel knows the replicas", || {
            sentinel
                .replicas(name)
                .is_some_and(|known| known >= replicas)
        });
        sentinel
    }

    /// The Sentinel's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The healthy replicas the Sentinel knows of `name`'s master, if it answers.
    fn replicas(&self, name: &str) -> Option<usize> {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .ok()?;
        let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(name)
            .query(&mut conn)
            .ok()?;
        Some(
            replicas
                .iter()
                .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
                .count(),
        )
    }

    /// The port of the master the Sentinel names for `name` now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let mut conn = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .ok()?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(name)
            .query(&mut conn)
            .ok()?;
        address.map(|(_, port)| port)
    }

    /// Waits until the Sentinel names the server on `port` as `name`'s master (after
    /// a failover).
    ///
    /// # Panics
    /// If it does not within 30 s.
    pub fn wait_for_master(&self, name: &str, port: u16) {
        wait_for("the Sentinel has failed over", || {
            self.master_port(name) == Some(port)
        });
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-master Redis Cluster of private servers.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them, and waits for `cluster_state:ok`.
    ///
    /// # Panics
    /// If the cluster does not form.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the cluster with extra `redis-server` arguments on every node.
    ///
    /// # Panics
    /// If the cluster does not form.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_nodes(3, 0, extra)
    }

    /// Starts three masters with one replica each (nodes 3, 4 and 5 at first), for
    /// failovers.
    ///
    /// # Panics
    /// If the cluster does not form.
    pub fn start_with_replicas() -> Self {
        Self::start_with_replicas_and_node_timeout(Duration::from_secs(5))
    }

    /// [`start_with_replicas`](Self::start_with_replicas) with `cluster-node-timeout`
    /// set to `node_timeout`: how long a master may be silent before the others count
    /// it as failed and its replica takes over (see
    /// [`kill_master_of`](Self::kill_master_of)).
    ///
    /// # Panics
    /// If the cluster does not form.
    pub fn start_with_replicas_and_node_timeout(node_timeout: Duration) -> Self {
        let timeout = node_timeout.as_millis().to_string();
        let cluster = Self::start_nodes(6, 1, &["--cluster-node-timeout", &timeout]);
        for node in 0..6 {
            let mut conn = cluster.connection(node);
            wait_for(
                &format!("node {node} is a master or a synced replica"),
                || {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut conn)
                        .unwrap_or_default();
                    info.contains("role:master") || info.contains("master_link_status:up")
                },
            );
        }
        cluster
    }

    /// Starts `count` cluster nodes; `extra` comes after the defaults (a later
    /// `--cluster-node-timeout` wins).
    fn start_nodes(count: usize, replicas: usize, extra: &[&str]) -> Self {
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                let mut args = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
                args.extend_from_slice(extra);
                RedisServer::start_on_free_ports(&args, free_cluster_port)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            created.is_ok_and(|s| s.success()),
            "redis-cli --cluster create failed"
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A plain connection to node `index` (0, 1 or 2).
    pub fn connection(&self, index: usize) -> redis::Connection {
        self.nodes[index].connection()
    }

    /// The nodes still running (all but those [`kill_master_of`](Self::kill_master_of)
    /// killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| self.nodes[node].running())
            .collect()
    }

    /// The hash slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let node = self.running().first().copied().unwrap_or(0);
        query(
            &mut self.connection(node),
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
    }

    /// The index of the node serving `key`'s slot, as the first running node sees it.
    ///
    /// # Panics
    /// If that node knows no node serving it.
    pub fn owner_of(&self, key: &str) -> usize {
        let node = self.running().first().copied().unwrap_or(0);
        match self.owner_seen_by(node, key) {
            Some(index) => index,
            None => panic!("no node serves the slot of {key}"),
        }
    }

    /// The index of the master serving `key`'s slot, as node `node` sees it.
    fn owner_seen_by(&self, node: usize, key: &str) -> Option<usize> {
        let slot = self.slot_of(key);
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.connection(node))
            .ok()?;
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...`
        let port = nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(from), Ok(to)) if (from..=to).contains(&slot))
            });
            let address = fields.get(1)?.split('@').next()?;
            serves.then(|| address.rsplit_once(':')?.1.parse::<u16>().ok())?
        });
        self.nodes.iter().position(|n| Some(n.port()) == port)
    }

    /// Fails over `key`'s slot: its master's replica takes over (`CLUSTER FAILOVER`,
    /// the manual, lossless kind, once the replica is in sync), and the old master
    /// becomes its replica. Returns the new master's index once every node names it.
    /// Needs [`start_with_replicas`](Self::start_with_replicas).
    ///
    /// # Panics
    /// If the master has no replica or the failover does not complete.
    pub fn fail_over(&self, key: &str) -> usize {
        let master = self.owner_of(key);
        let master_id: String = query(
            &mut self.connection(master),
            redis::cmd("CLUSTER").arg("MYID"),
        );
        // The master's own view: the node it knows as its replica (after a failover, the
        // demoted master, once it has told the new one).
        let replica_of_master = || -> Option<usize> {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut self.connection(master))
                .ok()?;
            let port = nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(3) != Some(&master_id.as_str()) {
                    return None;
                }
                let address = fields.get(1)?.split('@').next()?;
                address.rsplit_once(':')?.1.parse::<u16>().ok()
            })?;
            self.nodes.iter().position(|n| n.port() == port)
        };
        let mut replica = None;
        wait_for(&format!("the master of {key} knows a replica"), || {
            replica = replica_of_master();
            replica.is_some()
        });
        let Some(replica) = replica else {
            panic!("the master of {key} has no replica")
        };
        // A replica still syncing (a master demoted by the last failover) refuses.
        let mut on_replica = self.connection(replica);
        wait_for("the replica is in sync with its master", || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut on_replica)
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        let served =
            || (0..self.nodes.len()).all(|node| self.owner_seen_by(node, key) == Some(replica));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let _: () = query(&mut on_replica, redis::cmd("CLUSTER").arg("FAILOVER"));
            // A manual failover gives up after 5 s without a word, for instance when the
            // masters voted on this master's replacement less than twice the node timeout
            // ago: ask again.
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(8) && !served() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if served() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replica of {key}'s master never took over"
            );
        }
        replica
    }

    /// Kills `key`'s master (SIGKILL: no failover handshake, no goodbye to its
    /// clients) and waits until the cluster has promoted its replica on its own (after
    /// `cluster-node-timeout`, the others count the master as failed and the replica
    /// wins an election). Returns the new master's index once every running node names
    /// it. Needs [`start_with_replicas`](Self::start_with_replicas) (a short node
    /// timeout keeps this short).
    ///
    /// # Panics
    /// If the master has no synced replica or the cluster does not promote it.
    pub fn kill_master_of(&mut self, key: &str) -> usize {
        let master = self.owner_of(key);
        let master_id: String = query(
            &mut self.connection(master),
            redis::cmd("CLUSTER").arg("MYID"),
        );
        // Its replica, in sync (a replica whose data is too old would not stand).
        let replica = self.running().into_iter().find(|&node| {
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut self.connection(node))
                .is_ok_and(|nodes| {
                    nodes.lines().any(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields.get(2).is_some_and(|flags| flags.contains("myself"))
                            && fields.get(3) == Some(&master_id.as_str())
                    })
                })
        });
        let Some(replica) = replica else {
            panic!("the master of {key} has no replica")
        };
        let mut on_replica = self.connection(replica);
        wait_for("the replica is in sync with its master", || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut on_replica)
                .is_ok_and(|info| info.contains("master_link_status:up"))
        });
        // Everything the master has written reaches the replica before it dies: what a
        // replica lacks is lost with its master (asynchronous replication), and the
        // tests want the failover, not that loss.
        let offset = |conn: &mut redis::Connection, field: &str| -> Option<u64> {
            let info: String = redis::cmd("INFO").arg("replication").query(conn).ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
                .trim()
                .parse()
                .ok()
        };
        let written = offset(&mut self.connection(master), "master_repl_offset");
        wait_for("the replica has all the master wrote", || {
            offset(&mut on_replica, "slave_repl_offset") >= written
        });
        self.nodes[master].kill();
        wait_for(&format!("the replica of {key}'s master takes over"), || {
            self.running()
                .into_iter()
                .all(|node| self.owner_seen_by(node, key) == Some(replica))
        });
        replica
    }

    /// Reshards: moves `key`'s slot, and the keys in it, to node `to`, the way
    /// `redis-cli --cluster reshard` does (`SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE`,
    /// `SETSLOT NODE` on every master).
    ///
    /// # Panics
    /// If a step fails.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let (slot, from) = (self.slot_of(key), self.owner_of(key));
        assert_ne!(from, to, "the slot is already on node {to}");
        let id = |index: usize| -> String {
            query(
                &mut self.connection(index),
                redis::cmd("CLUSTER").arg("MYID"),
            )
        };
        let (from_id, to_id) = (id(from), id(to));
        let setslot = |index: usize, state: &str, node: &str| {
            let _: () = query(
                &mut self.connection(index),
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(state)
                    .arg(node),
            );
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = query(
                &mut self.connection(from),
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            );
            if keys.is_empty() {
                break;
            }
            let _: () = query(
                &mut self.connection(from),
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(self.nodes[to].port())
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys),
            );
        }
        for index in [to, from] {
            setslot(index, "NODE", &to_id);
        }
        for index in 0..self.nodes.len() {
            if index != to && index != from {
                setslot(index, "NODE", &to_id);
            }
        }
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.connection())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not reach cluster_state:ok"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn query<T: redis::FromRedisValue>(conn: &mut redis::Connection, cmd: &redis::Cmd) -> T {
    match cmd.query(conn) {
        Ok(reply) => reply,
        Err(err) => panic!("{cmd:?} failed: {err}"),
    }
}

/// Polls `condition` (every 20 ms, for at most 30 s).
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the client with tracking on (a near cache's invalidation connection) on the
/// server `conn` talks to, once there is one: a near cache turns tracking on again in
/// the background after a link broke (on a cluster, on every master at once), so a
/// test may come here while it reconnects.
///
/// # Panics
/// If none appears within the wait, or the server does not kill it.
pub fn kill_tracking_client(conn: &mut redis::Connection) {
    let mut found = None;
    wait_for("a client with tracking on", || {
        found = tracking_client(conn);
        found.is_some()
    });
    let Some(id) = found else {
        panic!("no client with tracking on");
    };
    let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(conn);
    assert_eq!(killed.ok(), Some(1), "the tracking client {id} is killed");
}

/// The id of the client with tracking on (a near cache's invalidation connection) on
/// the server `conn` talks to, read from `CLIENT LIST`.
pub fn tracking_client(conn: &mut redis::Connection) -> Option<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .unwrap_or_default();
    list.lines()
        .find(|line| {
            line.split(' ').any(|field| {
                field
                    .strip_prefix("flags=")
                    .is_some_and(|f| f.contains('t'))
            })
        })
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
}
