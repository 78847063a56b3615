//! [`RedisCluster`](crate::testkit::cluster::RedisCluster) is owned by one test end to end: free loopback ports, a temporary
//! directory, six `redis-server` child processes, all killed and the directory removed on
//! drop.
//!
//! The nodes run with the flags of `ops/redis-cluster.sh`: no persistence,
//! `cluster-node-timeout 2000` (a killed master is replaced within a few seconds),
//! `cluster-replica-validity-factor 0` (a replica may always take over) and
//! `repl-diskless-sync-delay 0` (replicas sync at once, not after 5 s). Full slot coverage
//! stays required (the default): while a master is down and not yet replaced, the whole
//! cluster answers `CLUSTERDOWN`.
//!
//! # Blocking
//!
//! Everything here is synchronous (`std::process` and the blocking `redis` client). Each
//! call blocks only for its loopback round trips (a probe gives up after 500 ms), except
//! [`RedisCluster::start_or_skip`](crate::testkit::cluster::RedisCluster::start_or_skip), which takes a few seconds (six servers,
//! `redis-cli --cluster create`, the wait for `cluster_state:ok`), and
//! [`RedisCluster::wait_healthy`](crate::testkit::cluster::RedisCluster::wait_healthy), which lasts until the failover is over. In a tokio test
//! call `start_or_skip` before spawning the test's own tasks, or through
//! `tokio::task::spawn_blocking`, and wait with [`RedisCluster::wait_healthy_async`](crate::testkit::cluster::RedisCluster::wait_healthy_async) while
//! tasks run: it sleeps on the runtime between probes.
//!
//! Needs `redis-server` and `redis-cli` (5.0 or later) on `PATH`; without them
//! `start_or_skip` skips with a line on stderr, unless `CHATSTREAM_REQUIRE_SERVICES=1`.
//! Installed tools that fail to form a cluster are a failure (a panic with the node logs),
//! not a skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chatstream_core::testkit::skip_or_fail;

/// Nodes of a cluster: 3 masters, each with 1 replica.
const NODES: usize = 6;
/// Offset of a node's cluster bus port from its client port (fixed in Redis).
const BUS_OFFSET: u16 = 10_000;
/// How long the start may take to reach `cluster_state:ok`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long one server may take to answer after its spawn.
const NODE_UP_LIMIT: Duration = Duration::from_secs(10);
/// Connect and read timeout of one probe.
const PROBE: Duration = Duration::from_millis(500);
/// Pause between two probes of a wait.
const POLL: Duration = Duration::from_millis(50);
/// The line Redis logs when it cannot bind its client or bus port.
const BIND_FAILED: &str = "Could not create server TCP listening socket";

/// A Redis Cluster of 3 masters and 3 replicas on loopback, owned by one test.
///
/// Killed and its directory removed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// One `redis-server`; `child` is `None` once killed.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts 3 masters + 3 replicas on free loopback ports and creates the cluster, or
    /// `None` (after [`skip_or_fail`]) when `redis-server` / `redis-cli` are missing or lack
    /// cluster support. Returns once every node reports `cluster_state:ok`, every replica is
    /// in sync with its master and all nodes agree on the topology.
    ///
    /// Blocks a few seconds (see the [module docs](self)).
    ///
    /// # Panics
    ///
    /// When the installed tools fail to form the cluster within 60 s, with the node logs.
    pub fn start_or_skip() -> Option<Self> {
        if let Err(why) = cluster_tools() {
            return skip_or_fail(
                "redis-server and redis-cli with cluster support (the test starts its own \
                 cluster; needed on PATH)",
                why,
            );
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!(
            "chatstream-cluster-{}-{}",
            std::process::id(),
            &id[..12]
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cluster directory {}: {e}", dir.display());
        }
        // Owned from here on: a panic below drops it, which kills what was started.
        let mut cluster = Self {
            dir,
            nodes: Vec::with_capacity(NODES),
        };
        for _ in 0..NODES {
            let node = cluster.spawn_node();
            cluster.nodes.push(node);
        }
        cluster.create();
        if let Err(e) = cluster.wait(START_LIMIT, Self::check_settled) {
            panic!(
                "the cluster did not settle within {START_LIMIT:?}: {e}\n{}",
                cluster.log_tails()
            );
        }
        Some(cluster)
    }

    /// All node URLs, comma separated: `redis://127.0.0.1:p1,redis://127.0.0.1:p2,...`
    /// (killed nodes included: it is the list a client is configured with).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| node_url(n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The URL of one node (a seed): `redis://127.0.0.1:p1`, the first node still alive.
    pub fn seed_url(&self) -> String {
        node_url(
            self.live_ports()
                .first()
                .copied()
                .unwrap_or(self.nodes[0].port),
        )
    }

    /// Ports of the current masters, ascending: the nodes a live node's `CLUSTER NODES`
    /// shows as masters that own slots and are not flagged failing (`fail` or `fail?`).
    ///
    /// # Panics
    ///
    /// When no live node answers.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .view()
            .into_iter()
            .filter(|e| e.master && !e.failing && !e.slots.is_empty())
            .map(|e| e.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Port of the master currently serving `key`'s slot (`CLUSTER KEYSLOT`, then the slot's
    /// owner in a live node's `CLUSTER NODES`: the node a `MOVED` would name). Between a
    /// master's death and its replacement that is still the dead master.
    ///
    /// # Panics
    ///
    /// When no live node answers, or the slot has no owner.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .ask_any(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        self.view()
            .into_iter()
            .find(|e| e.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|e| e.port)
            .unwrap_or_else(|| panic!("no node owns slot {slot} (of {key:?})"))
    }

    /// SIGKILLs the node on `port` (it stays dead).
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`.
    pub fn kill(&mut self, port: u16) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) else {
            panic!("no node of this cluster on port {port}");
        };
        node.kill();
    }

    /// Waits (up to `timeout`) until every live node reports `cluster_state:ok` with all
    /// 16384 slots ok, and no live node sees a slot on a killed or failing node (the slots
    /// of a killed master are served by a promoted replica). `Err` describes what was still
    /// wrong at the timeout.
    ///
    /// Blocks the thread, polling every 50 ms; see
    /// [`wait_healthy_async`](Self::wait_healthy_async).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        self.wait(timeout, Self::check_healthy)
            .map_err(|e| format!("not healthy after {timeout:?}: {e}"))
    }

    /// [`wait_healthy`](Self::wait_healthy) that sleeps on the tokio runtime between probes
    /// (each probe still blocks for its loopback round trips, at most 500 ms per node).
    pub async fn wait_healthy_async(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.check_healthy() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("not healthy after {timeout:?}: {e}"));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Polls `check` until it passes, or returns its last error once `timeout` elapses.
    fn wait(
        &self,
        timeout: Duration,
        check: fn(&Self) -> Result<(), String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn check_healthy(&self) -> Result<(), String> {
        let killed: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_none())
            .map(|n| n.port)
            .collect();
        for port in self.live_ports() {
            let info: String = ask(port, redis::cmd("CLUSTER").arg("INFO"))?;
            for (field, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "16384"),
            ] {
                let got = info_field(&info, field);
                if got != Some(want) {
                    return Err(format!("node {port}: {field} is {got:?}, not {want}"));
                }
            }
            for entry in view_of(port)? {
                if entry.slots.is_empty() {
                    continue;
                }
                if killed.contains(&entry.port) || entry.failing {
                    return Err(format!(
                        "node {port} still sees slots {:?} on node {} (killed or failing)",
                        entry.slots, entry.port
                    ));
                }
            }
        }
        Ok(())
    }

    /// Healthy, and the topology of a fresh cluster on every node: 6 nodes, 3 masters with
    /// slots, 3 replicas of known masters, each replica's link to its master up.
    fn check_settled(&self) -> Result<(), String> {
        self.check_healthy()?;
        for port in self.live_ports() {
            let view = view_of(port)?;
            let masters = view
                .iter()
                .filter(|e| e.master && !e.slots.is_empty())
                .count();
            let replicas = view
                .iter()
                .filter(|e| {
                    e.replica
                        && e.master_id
                            .as_ref()
                            .is_some_and(|m| view.iter().any(|o| o.master && &o.id == m))
                })
                .count();
            if view.len() != NODES || masters != NODES / 2 || replicas != NODES / 2 {
                return Err(format!(
                    "node {port} sees {} nodes, {masters} masters with slots, {replicas} replicas",
                    view.len()
                ));
            }
            if view.iter().any(|e| e.myself && e.replica) {
                let info: String = ask(port, redis::cmd("INFO").arg("replication"))?;
                let link = info_field(&info, "master_link_status");
                if link != Some("up") {
                    return Err(format!("replica {port}: master_link_status {link:?}"));
                }
            }
        }
        Ok(())
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Sends `cmd` to the live nodes in turn; the first answer wins.
    fn ask_any<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut errors = Vec::new();
        for port in self.live_ports() {
            match ask(port, cmd) {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no live node answered: {errors:?}"))
    }

    /// `CLUSTER NODES` as the first live node that answers sees it.
    fn view(&self) -> Vec<Entry> {
        let nodes: String = self
            .ask_any(redis::cmd("CLUSTER").arg("NODES"))
            .unwrap_or_else(|e| panic!("CLUSTER NODES: {e}"));
        parse_nodes(&nodes)
    }

    /// Starts one node on a free port pair, moving on to other ports while the chosen one
    /// is taken between the probe and the bind.
    fn spawn_node(&self) -> Node {
        for _ in 0..20 {
            let port = free_port_pair();
            let node_dir = self.dir.join(port.to_string());
            if let Err(e) = std::fs::create_dir_all(&node_dir) {
                panic!("node directory {}: {e}", node_dir.display());
            }
            let log = self.log_path(port);
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(node_dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "2000"])
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) => panic!("spawn redis-server: {e}"),
            };
            let mut node = Node {
                port,
                child: Some(child),
            };
            match node.wait_up(&log) {
                Ok(()) => return node,
                Err(NodeDown::PortTaken) => {
                    node.kill();
                    let _ = std::fs::remove_dir_all(&node_dir);
                    let _ = std::fs::remove_file(&log);
                }
                Err(NodeDown::Failed(why)) => {
                    node.kill();
                    panic!("redis-server on port {port}: {why}\n{}", tail(&log));
                }
            }
        }
        panic!("no free port pair held long enough for redis-server in 20 tries");
    }

    /// `redis-cli --cluster create` over all nodes, its output in `create.log`.
    fn create(&self) {
        let out = self.dir.join("create.log");
        let (stdout, stderr) = match File::create(&out).and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(files) => files,
            Err(e) => panic!("{}: {e}", out.display()),
        };
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("spawn redis-cli --cluster create: {e}"),
        };
        let failure = match wait_child(&mut child, START_LIMIT) {
            Some(status) if status.success() => return,
            Some(status) => status.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                format!("no exit within {START_LIMIT:?}")
            }
        };
        panic!(
            "redis-cli --cluster create: {failure}\n{}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            self.log_tails()
        );
    }

    fn log_path(&self, port: u16) -> PathBuf {
        self.dir.join(format!("{port}.log"))
    }

    /// The last lines of every node's log, for a failure message.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| tail(&self.log_path(n.port)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a freshly spawned node is not serving.
enum NodeDown {
    /// Its port or bus port was taken by someone else: try other ports.
    PortTaken,
    /// Anything else.
    Failed(String),
}

impl Node {
    /// Waits until this very process answers on the port (`INFO server` names its pid: a
    /// server of someone else on the same port does not count).
    fn wait_up(&mut self, log: &Path) -> Result<(), NodeDown> {
        let deadline = Instant::now() + NODE_UP_LIMIT;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(NodeDown::Failed("killed".into()));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(if text.contains(BIND_FAILED) {
                        NodeDown::PortTaken
                    } else {
                        NodeDown::Failed(format!("exited ({status})"))
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(NodeDown::Failed(format!("wait: {e}"))),
            }
            let pid = child.id().to_string();
            if let Ok(info) = ask::<String>(self.port, redis::cmd("INFO").arg("server")) {
                if info_field(&info, "process_id") == Some(pid.as_str()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeDown::Failed(format!(
                    "no answer within {NODE_UP_LIMIT:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL and reap; nothing if already dead.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct Entry {
    id: String,
    port: u16,
    myself: bool,
    master: bool,
    replica: bool,
    /// Flagged `fail` or `fail?`.
    failing: bool,
    master_id: Option<String>,
    /// Owned slot ranges, inclusive (importing/migrating markers left out).
    slots: Vec<(u16, u16)>,
}

/// Parses `CLUSTER NODES`
/// (`<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`);
/// lines that do not parse are left out.
fn parse_nodes(text: &str) -> Vec<Entry> {
    text.lines().filter_map(parse_entry).collect()
}

fn parse_entry(line: &str) -> Option<Entry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = fields[1].split(['@', ',']).next()?;
    let port = addr.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let slots = fields[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(Entry {
        id: fields[0].to_owned(),
        port,
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        replica: flags.contains(&"slave"),
        failing: flags.contains(&"fail") || flags.contains(&"fail?"),
        master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        slots,
    })
}

/// The value of `field` in an `INFO`-style reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// One command on a fresh connection to one node, with [`PROBE`] timeouts.
fn ask<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    let on = |e: redis::RedisError| format!("node {port}: {e}");
    let client = redis::Client::open(node_url(port)).map_err(on)?;
    let mut con = client.get_connection_with_timeout(PROBE).map_err(on)?;
    con.set_read_timeout(Some(PROBE)).map_err(on)?;
    con.set_write_timeout(Some(PROBE)).map_err(on)?;
    cmd.query(&mut con).map_err(on)
}

/// `CLUSTER NODES` as the node on `port` sees it.
fn view_of(port: u16) -> Result<Vec<Entry>, String> {
    let text: String = ask(port, redis::cmd("CLUSTER").arg("NODES"))?;
    Ok(parse_nodes(&text))
}

/// A free loopback port whose bus port (+10000) is free too, as far as a bind can tell;
/// the server may still lose either to someone else before it binds.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair (port, port + 10000) in 100 tries");
}

/// Checks that `redis-server` and `redis-cli` run and are recent enough for
/// `redis-cli --cluster` (5.0).
fn cluster_tools() -> Result<(), String> {
    for tool in ["redis-server", "redis-cli"] {
        let out = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Redis server v=7.0.15 sha=..." / "redis-cli 7.0.15"
        let version = text
            .split_whitespace()
            .map(|w| w.trim_start_matches("v="))
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .unwrap_or_default();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 5 {
            return Err(format!(
                "{tool} {:?} predates cluster creation by redis-cli (5.0)",
                text.trim()
            ));
        }
    }
    Ok(())
}

/// Polls `child` until it exits (`Some`) or `limit` passes (`None`).
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => return None,
        }
    }
}

/// The last 15 lines of a log, headed by its path.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!("--- {}\n{}", path.display(), lines[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host master,fail - 0 0 2 connected
c3 127.0.0.1:30003@40003 slave a1 0 0 1 connected
d4 127.0.0.1:30004@40004 master - 0 0 4 connected 5461 5462-10922 [5463->-e5]
garbage
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert!(nodes[0].myself && nodes[0].master && nodes[0].slots == [(0, 5460)]);
        assert!(nodes[1].failing && nodes[1].port == 30002 && nodes[1].slots.is_empty());
        assert_eq!(nodes[2].master_id.as_deref(), Some("a1"));
        assert!(nodes[2].replica && !nodes[2].master);
        assert_eq!(nodes[3].slots, [(5461, 5461), (5462, 10922)]);
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_ok"), Some("16384"));
        assert_eq!(info_field(info, "cluster_slots"), None);
    }
}
