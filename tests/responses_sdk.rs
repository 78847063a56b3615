//! The official OpenAI SDKs, unchanged, against the Responses API of the real example
//! binaries: Python `openai` (in `target/sdk-venv`) and Node `openai` (in
//! `target/sdk-node`), both made by `.ci/run`. The scripts in `tests/responses_sdk/` cover
//! `responses.create` plain and streamed, the `responses.stream` helper,
//! `previous_response_id`, input items, background mode with a dropped connection resumed
//! by `retrieve(id, stream=True, starting_after=N)` (the joined text equals the stored
//! `output_text`), `cancel`, `delete` and the error mapping.
//!
//! Against the quickstart (in-memory broker), and against `queue_worker` on RabbitMQ: one
//! `--worker-only` process and two `--rest-only` instances sharing the stored responses in
//! Redis, the scripts creating responses on one instance and resuming, polling and
//! cancelling them on the other.
//!
//! A missing SDK, RabbitMQ or Redis skips a test with a line on stderr, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`. Set it up by hand with:
//!
//! ```text
//! python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install openai
//! npm install --prefix target/sdk-node openai
//! ```
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatstream_core::testkit::skip_or_fail;
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use lapin::options::QueueDeleteOptions;
use lapin::Connection;
use support::{amqp_url, block_on_aside, example_path, port_after, start, start_quickstart};
use support::{within, Started};
use tokio::process::Command;

/// Longest one SDK script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// Longest an example may take to start.
const WAIT: Duration = Duration::from_secs(30);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python with `openai`, or `None` after saying why the test skips.
fn python() -> Option<PathBuf> {
    let python = root().join("target/sdk-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    skip_or_fail(
        "the Python OpenAI SDK",
        format!("{python:?} is missing (`.ci/run` makes it)"),
    )
}

/// The directory holding `node_modules/openai`, or `None` after saying why the test skips.
fn node_sdk() -> Option<PathBuf> {
    let dir = root().join("target/sdk-node");
    if dir.join("node_modules/openai/package.json").exists() {
        return Some(dir);
    }
    skip_or_fail(
        "the Node OpenAI SDK",
        format!("{dir:?} has no node_modules/openai (`.ci/run` installs it)"),
    )
}

/// Runs one SDK script with `base` (and `base2`, another instance) as the API; fails the
/// test with its output unless it passes every check.
async fn run(program: &Path, script: &str, sdk_dir: Option<&Path>, base: &str, base2: &str) {
    let mut cmd = Command::new(program);
    cmd.arg(root().join("tests/responses_sdk").join(script))
        .env("OPENAI_BASE_URL", base)
        .env("OPENAI_BASE_URL_2", base2)
        .env("OPENAI_API_KEY", "sk-chatstream-test")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = sdk_dir {
        cmd.env("SDK_NODE_DIR", dir);
    }
    let out = within(script, SCRIPT_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("run {program:?} {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every check ran.
    for check in [
        "create",
        "stream helper",
        "background resume",
        "cancel",
        "delete",
        "errors",
    ] {
        assert!(
            stdout.contains(&format!("ok {check}\n")),
            "{script}: no `ok {check}`:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn python_sdk_against_the_quickstart() {
    let Some(python) = python() else { return };
    let (_child, port) = start_quickstart(WAIT).await;
    let base = format!("http://127.0.0.1:{port}/v1");
    run(&python, "sdk_test.py", None, &base, &base).await;
}

#[tokio::test]
async fn node_sdk_against_the_quickstart() {
    let Some(dir) = node_sdk() else { return };
    let (_child, port) = start_quickstart(WAIT).await;
    let base = format!("http://127.0.0.1:{port}/v1");
    run(Path::new("node"), "sdk_test.cjs", Some(&dir), &base, &base).await;
}

/// A queue and a token log of the test's own on RabbitMQ, deleted when dropped.
struct Queues {
    client: Arc<Connection>,
    queue: String,
    stream: String,
}

impl Drop for Queues {
    fn drop(&mut self) {
        let client = self.client.clone();
        let queues = [self.queue.clone(), self.stream.clone()];
        block_on_aside(async move {
            if let Ok(ch) = client.create_channel().await {
                for q in queues {
                    let options = QueueDeleteOptions::default();
                    let _ = ch.queue_delete(q.as_str().into(), options).await;
                }
            }
            let _ = client.close(200, "test cleanup".into()).await;
        });
    }
}

async fn queue_worker(q: &Queues, prefix: &str, args: &[&str]) -> Started<Option<u16>> {
    let mut cmd = Command::new(example_path("queue_worker"));
    cmd.args(args)
        .env("RABBITMQ_URL", amqp_url())
        .env_remove("CHATSTREAM_AMQP_URL")
        .env("RABBITMQ_QUEUE", &q.queue)
        .env("RABBITMQ_TOKEN_STREAM", &q.stream)
        .env("CHATSTREAM_SCRIPTED", "1")
        .env("OPENAI_MODEL", "scripted")
        .env("REDIS_URL", redis_url())
        .env("REDIS_PREFIX", prefix)
        .env("RESTAPI_HOST", "127.0.0.1")
        .env("RESTAPI_PORT", "0")
        .env("LOG_LEVEL", "warn")
        .env_remove("CHATSTREAM_WORKER_ONLY")
        .env_remove("CHATSTREAM_REST_ONLY");
    let worker = args.contains(&"--worker-only");
    start(cmd, &format!("queue_worker {args:?}"), WAIT, |line| {
        if worker {
            return line
                .starts_with("queue_worker: worker answering")
                .then_some(None);
        }
        port_after(line, "REST API on http://127.0.0.1:").map(Some)
    })
    .await
}

// Multi-threaded: the clean-up in `Queues::drop` blocks one thread while lapin's I/O runs
// on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sdks_against_queue_worker_on_rabbitmq_across_two_instances() {
    let (Some(python), Some(node_dir)) = (python(), node_sdk()) else {
        return;
    };
    let url = amqp_url();
    let client = match Connection::connect(&url, Default::default()).await {
        Ok(c) => c,
        Err(e) => {
            let _: Option<()> = skip_or_fail("RabbitMQ", format!("{url}: {e}"));
            return;
        }
    };
    let Some(redis) = connect_or_skip("responses-sdk").await else {
        return;
    };
    let _redis_keys = PrefixGuard::new(&redis);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let queues = Queues {
        client: Arc::new(client),
        queue: format!("e2e-responses-{}", &id[..12]),
        stream: format!("e2e-responses-{}.log", &id[..12]),
    };
    let prefix = redis.keys().prefix().to_owned();
    let _worker = queue_worker(&queues, &prefix, &["--worker-only"]).await;
    let a = queue_worker(&queues, &prefix, &["--rest-only"]).await;
    let b = queue_worker(&queues, &prefix, &["--rest-only"]).await;
    let base = |s: &Started<Option<u16>>| match s.ready {
        Some(port) => format!("http://127.0.0.1:{port}/v1"),
        None => panic!("no REST port"),
    };
    let (base_a, base_b) = (base(&a), base(&b));
    run(&python, "sdk_test.py", None, &base_a, &base_b).await;
    run(
        Path::new("node"),
        "sdk_test.cjs",
        Some(&node_dir),
        &base_b,
        &base_a,
    )
    .await;
}
