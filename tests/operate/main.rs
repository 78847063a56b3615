//! Operating a deployment, end to end with the real example binaries over the real
//! RabbitMQ: readiness (`GET /ready`) follows the broker connection through a cuttable TCP
//! proxy, and a worker-only process's metrics (`METRICS_PORT`) move as requests are
//! answered, fail and are dead-lettered (and the worker's `/ready` on that port); and
//! one trace holds the gateway's, the worker's and the LLM call's spans (`traces`); and
//! every metric the Grafana dashboard queries is in a gateway's or a worker's scrape
//! (`dashboard`).
//!
//! Each test uses a request queue of its own and deletes what it declared. Skips when
//! RabbitMQ is unreachable (`CHATSTREAM_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), unless `CHATSTREAM_REQUIRE_SERVICES=1`.
#![cfg(all(unix, feature = "amqp", feature = "axum"))]

#[path = "../support/mod.rs"]
mod support;

mod dashboard;
mod metrics;
mod proxy;
mod traces;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
use chatstream_core::testkit::skip_or_fail;
use lapin::options::QueueDeleteOptions;
use lapin::Connection;
use proxy::Proxy;
use support::{amqp_url, block_on_aside, example_path, http, port_after, start, Started};
use tokio::process::Command;

/// Longest any single wait may take before the test fails as hung.
const WAIT: Duration = Duration::from_secs(30);

/// A queue and token stream of the test's own, an outside client's connection, the fake
/// LLM; deletes the queues when dropped.
pub(crate) struct Setup {
    client: Arc<Connection>,
    queue: String,
    stream: String,
    fake: FakeOpenAi,
    /// More queues to delete (`response_{uid}`).
    extra_queues: Mutex<Vec<String>>,
}

/// Ports a started `queue_worker` printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    /// The REST API's.
    pub(crate) rest: Option<u16>,
    /// The worker's metrics port's (`METRICS_PORT`).
    pub(crate) metrics: Option<u16>,
}

impl Setup {
    /// Connects as an outside client would, or skips (`None`).
    pub(crate) async fn new(behaviour: Behaviour) -> Option<Self> {
        let url = amqp_url();
        let client = match Connection::connect(&url, Default::default()).await {
            Ok(c) => c,
            Err(e) => return skip_or_fail("RabbitMQ", format!("{url}: {e}")),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        Some(Self {
            client: Arc::new(client),
            queue: format!("e2e-operate-{}", &id[..12]),
            stream: format!("e2e-operate-{}.log", &id[..12]),
            fake: FakeOpenAi::start(behaviour).await,
            extra_queues: Mutex::default(),
        })
    }

    /// The example `queue_worker` with `args`, on this setup's queue and fake LLM, over
    /// `amqp_url`; `env` adds variables. Waits for its ready line (the worker consuming,
    /// the REST API's address): returns the ports it printed.
    pub(crate) async fn start(
        &self,
        amqp_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Started<Ports> {
        let mut cmd = Command::new(example_path("queue_worker"));
        cmd.args(args)
            .env("RABBITMQ_URL", amqp_url)
            .env_remove("CHATSTREAM_AMQP_URL")
            .env("RABBITMQ_QUEUE", &self.queue)
            .env("RABBITMQ_TOKEN_STREAM", &self.stream)
            .env("OPENAI_URL", self.fake.base_url())
            .env("OPENAI_API_KEY", "dummy-token")
            .env("OPENAI_MODEL", "fake-model")
            .env("RESTAPI_HOST", "127.0.0.1")
            .env("RESTAPI_PORT", "0")
            .env("LOG_LEVEL", "warn")
            .env("WORKER_CONCURRENCY", "4")
            .env_remove("METRICS_PORT")
            .env_remove("CHATSTREAM_SCRIPTED")
            .env_remove("CHATSTREAM_WORKER_ONLY")
            .env_remove("CHATSTREAM_REST_ONLY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let wants_rest = !args.contains(&"--worker-only");
        let wants_worker = !args.contains(&"--rest-only");
        let (mut worker_ready, mut rest, mut metrics) = (false, None, None);
        start(cmd, &format!("queue_worker {args:?}"), WAIT, |line| {
            worker_ready |= line.starts_with("queue_worker: worker answering");
            rest = rest.or(port_after(line, "REST API on http://127.0.0.1:"));
            metrics = metrics.or(port_after(line, "metrics on http://127.0.0.1:"));
            let ready = (!wants_worker || worker_ready) && (!wants_rest || rest.is_some());
            ready.then_some(Ports { rest, metrics })
        })
        .await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let client = self.client.clone();
        let mut queues = vec![self.queue.clone(), self.stream.clone()];
        queues.extend(
            self.extra_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        block_on_aside(async move {
            if let Ok(ch) = client.create_channel().await {
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
        });
    }
}

/// `host:port` of an AMQP URL (port 5672 when it names none).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5672")
    }
}

/// The AMQP URL with its `host:port` replaced by `127.0.0.1:port`.
fn via(url: &str, port: u16) -> String {
    url.replacen(&host_port(url), &format!("127.0.0.1:{port}"), 1)
        .replacen("localhost:", "127.0.0.1:", 1)
}

/// Polls `GET /ready` on `port` until its status line contains `status`; returns the body.
pub(crate) async fn ready_until(port: u16, status: &str) -> String {
    support::within(&format!("/ready answering {status}"), WAIT, async {
        loop {
            let (line, body) = http(port, "GET /ready HTTP/1.0", "", WAIT).await;
            if line.contains(status) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

// Multi-threaded: lapin's I/O runs on the test's runtime, and `Setup`'s drop blocks one
// thread while it deletes the queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_connection_through_a_cut_and_back() {
    let Some(setup) = Setup::new(Behaviour::Answer(Answer::new(["hi"]))).await else {
        return;
    };
    let url = amqp_url();
    let proxy = Proxy::start(host_port(&url)).await;
    let started = setup
        .start(&via(&url, proxy.port()), &["--rest-only"], &[])
        .await;
    let port = started.ready.rest.expect("the REST API's port");

    let body = ready_until(port, " 200 ").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"status": "ready", "checks": {"rabbitmq": "up"}})
    );

    proxy.cut();
    let body = ready_until(port, " 503 ").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "unavailable", "{body}");
    let reason = json["reason"].as_str().expect("a reason");
    assert!(reason.starts_with("rabbitmq: "), "{reason}");

    // Seed 001's liveness stays untouched by the broker: /ping (seed 003's) still answers.
    let (line, _) = http(port, "GET /ping HTTP/1.0", "", WAIT).await;
    assert!(line.contains(" 200 "), "{line}");

    proxy.restore();
    let body = ready_until(port, " 200 ").await;
    assert!(body.contains("\"rabbitmq\":\"up\""), "{body}");
}

#[test]
fn the_proxy_url_replaces_host_and_port_only() {
    assert_eq!(
        host_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
        "127.0.0.1:5672"
    );
    assert_eq!(host_port("amqp://rabbit/%2f"), "rabbit:5672");
    assert_eq!(
        via("amqp://guest:guest@127.0.0.1:5672/%2f", 9),
        "amqp://guest:guest@127.0.0.1:9/%2f"
    );
}
