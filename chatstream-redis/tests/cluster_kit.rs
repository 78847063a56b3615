//! The Redis Cluster test kit and `ops/redis-cluster.sh`: each brings up 3 masters and
//! 3 replicas on loopback that answer `cluster_state:ok`; a killed master's slots move to
//! its replica; the script's `stop` leaves no node behind.
//!
//! Needs `redis-server` and `redis-cli` on `PATH`; without them the tests skip with a line
//! on stderr, unless `CHATSTREAM_REQUIRE_SERVICES=1`, where they fail.
//!
//! ```text
//! cargo test -p chatstream-redis --all-features --test cluster_kit -- --nocapture
//! ```

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatstream_core::testkit::skip_or_fail;
use chatstream_redis::testkit::cluster::RedisCluster;

/// Longest a failover may take (node timeout 2 s, then the election).
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("URL");
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to node {port}: {e}"));
    con.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    con
}

/// Ports of a URL list `redis://127.0.0.1:p1,redis://127.0.0.1:p2,...`.
fn ports_of(urls: &str) -> Vec<u16> {
    urls.split(',')
        .map(|u| {
            u.strip_prefix("redis://127.0.0.1:")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("not a loopback node URL: {u:?} in {urls:?}"))
        })
        .collect()
}

/// A tokio test, as the tests of the adapter on a cluster will be: the start blocks before
/// any task exists, the failover is awaited.
#[tokio::test]
async fn a_killed_master_is_replaced_by_its_replica() {
    let started = Instant::now();
    let Some(mut cluster) = RedisCluster::start_or_skip() else {
        return;
    };
    let start_took = started.elapsed();
    let ports = ports_of(&cluster.url());
    assert_eq!(ports.len(), 6, "{}", cluster.url());
    assert!(ports.contains(&ports_of(&cluster.seed_url())[0]));
    let before = cluster.masters();
    assert_eq!(before.len(), 3, "masters of a fresh cluster: {before:?}");

    let key = "{cluster-kit}:answer";
    let master = cluster.master_of(key);
    assert!(before.contains(&master), "{master} not in {before:?}");
    let mut con = connect(master);
    let () = redis::cmd("SET")
        .arg(key)
        .arg("42")
        .query(&mut con)
        .expect("SET on the key's master");
    // Gives the replica the write; not asserted (a failover may lose the latest writes).
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut con)
        .expect("WAIT");
    drop(con);

    let failover = Instant::now();
    cluster.kill(master);
    if let Err(e) = cluster.wait_healthy_async(FAILOVER_LIMIT).await {
        panic!("the cluster did not recover from killing master {master}: {e}");
    }
    let failover_took = failover.elapsed();

    let after = cluster.masters();
    assert!(
        !after.contains(&master),
        "killed {master} still a master: {after:?}"
    );
    assert_eq!(after.len(), 3, "masters after the failover: {after:?}");
    let new_master = cluster.master_of(key);
    assert_ne!(new_master, master);
    assert!(
        !before.contains(&new_master),
        "the key's slot went to {new_master}, not to a promoted replica ({before:?} were masters)"
    );
    // The new master serves the slot itself: no MOVED, no CLUSTERDOWN.
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut connect(new_master))
        .unwrap_or_else(|e| panic!("GET on the new master {new_master}: {e}"));
    eprintln!(
        "cluster up in {:.1} s; killed master {master}, {new_master} took its slots after \
         {:.1} s; the key {} (replicas acked: {acked})",
        start_took.as_secs_f64(),
        failover_took.as_secs_f64(),
        if value.is_some() {
            "survived"
        } else {
            "was lost"
        },
    );
}

/// A cluster of `ops/redis-cluster.sh`, stopped on drop (also when an assertion fails).
struct ScriptCluster {
    script: PathBuf,
    dir: PathBuf,
}

impl ScriptCluster {
    fn run(&self, action: &str) -> Output {
        Command::new(&self.script)
            .arg(action)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} {action}: {e}", self.script.display()))
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}

#[test]
fn the_ops_script_starts_a_cluster_and_stops_it() {
    if let Err(e) = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        skip_or_fail::<()>("redis-server (the script starts its own cluster)", e);
        return;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let cluster = ScriptCluster {
        script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/redis-cluster.sh"),
        dir: std::env::temp_dir().join(format!("chatstream-cluster-script-{}", &id[..12])),
    };

    let started = Instant::now();
    let out = cluster.run("start");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "start: {}\n{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout is the URL line only: {stdout:?}");
    let ports = ports_of(lines[0]);
    assert_eq!(ports.len(), 6, "{}", lines[0]);
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "{}", lines[0]);
    let written = std::fs::read_to_string(cluster.dir.join("url")).expect("DIR/url");
    assert_eq!(written.trim_end(), lines[0]);

    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut connect(ports[0]))
        .expect("CLUSTER INFO");
    assert!(
        info.lines().any(|l| l.trim_end() == "cluster_state:ok"),
        "{info}"
    );

    let stopped = Instant::now();
    let out = cluster.run("stop");
    assert!(
        out.status.success(),
        "stop: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stop_took = stopped.elapsed();
    for port in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "node {port} still listens after stop"
        );
    }
    assert!(!cluster.dir.exists(), "stop left {}", cluster.dir.display());
    let again = cluster.run("stop");
    assert!(again.status.success(), "a second stop fails: {again:?}");
    eprintln!(
        "ops/redis-cluster.sh: start {:.1} s, stop {:.1} s",
        took.as_secs_f64(),
        stop_took.as_secs_f64()
    );
}
