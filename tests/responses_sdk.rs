//! The official OpenAI SDKs, unchanged, against the Responses API of the real example
//! binaries: Python `openai` (in `target/sdk-venv`) and Node `openai` (in
//! `target/sdk-node`), both made by `.ci/run`. The scripts in `tests/responses_sdk/` cover
//! `responses.create` plain and streamed, the `responses.stream` helper,
//! `previous_response_id`, input items, background mode with a dropped connection resumed
//! by `retrieve(id, stream=True, starting_after=N)` (the joined text equals the stored
//! `output_text`), `cancel`, `delete` and the error mapping (with the quickstart's stream
//! authorization on: a wrong key is a 401, another user's response a 404); the `sdk_tools`
//! scripts a function-tool round (the call as a `function_call` item, plain and through the
//! stream helper, then its output continuing the stored conversation) against the fake
//! OpenAI server as the model.
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

use chatstream_core::testkit::fake_openai::{Answer, Behaviour, FakeOpenAi};
use chatstream_core::testkit::skip_or_fail;
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use lapin::options::QueueDeleteOptions;
use lapin::Connection;
use support::{amqp_url, block_on_aside, example_path, port_after, start, start_quickstart_with};
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

/// The checks of the main scripts.
const CHECKS: &[&str] = &[
    "create",
    "stream helper",
    "background resume",
    "cancel",
    "delete",
    "errors",
];
/// The checks of the main scripts when the example has per-stream authorization on.
const CHECKS_WITH_AUTH: &[&str] = &[
    "create",
    "stream helper",
    "background resume",
    "cancel",
    "delete",
    "auth",
    "errors",
];
/// The checks of the tool scripts against queue_worker (whose `/v1/chat/completions` is
/// seed 003's).
const TOOL_CHECKS: &[&str] = &["tool call", "tool call stream", "tool choice none"];
/// The checks of the tool scripts against the quickstart, chat completions included.
const TOOL_CHECKS_WITH_CHAT: &[&str] = &[
    "tool call",
    "tool call stream",
    "tool choice none",
    "chat tool call",
];

/// The bearer token of the SDK scripts, and of another user, when an example has
/// per-stream authorization on (`CHATSTREAM_STREAM_AUTH=1`).
const AUTH_VARS: &[(&str, &str)] = &[
    ("CHATSTREAM_STREAM_AUTH", "1"),
    (
        "CHATSTREAM_API_TOKENS",
        "sk-chatstream-test:alice,sk-chatstream-other:bob",
    ),
];

/// One SDK script run.
struct Script<'a> {
    program: &'a Path,
    script: &'a str,
    /// Where Node's `openai` is installed (Node scripts).
    sdk_dir: Option<&'a Path>,
    /// The checks it must pass.
    checks: &'a [&'a str],
    /// Check 401 and other users' 404s too.
    auth: bool,
}

/// Runs one SDK script with `base` (and `base2`, another instance) as the API; fails the
/// test with its output unless it passes every check.
async fn run(s: Script<'_>, base: &str, base2: &str) {
    let Script {
        program,
        script,
        sdk_dir,
        checks,
        auth,
    } = s;
    let mut cmd = Command::new(program);
    cmd.arg(root().join("tests/responses_sdk").join(script))
        .env("OPENAI_BASE_URL", base)
        .env("OPENAI_BASE_URL_2", base2)
        .env("OPENAI_API_KEY", "sk-chatstream-test")
        .env("OPENAI_API_KEY_OTHER_USER", "sk-chatstream-other")
        .env("CHECK_AUTH", if auth { "1" } else { "0" })
        .env(
            "CHECK_CHAT",
            if checks == TOOL_CHECKS_WITH_CHAT {
                "1"
            } else {
                "0"
            },
        )
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
    for check in checks {
        assert!(
            stdout.contains(&format!("ok {check}\n")),
            "{script}: no `ok {check}`:\n{stdout}"
        );
    }
}

// The quickstart runs with per-stream authorization on: the scripts also check that a
// wrong key is a 401 (the SDKs' AuthenticationError) and that another user's response is
// a 404.
#[tokio::test]
async fn python_sdk_against_the_quickstart() {
    let Some(python) = python() else { return };
    let (_child, port) = start_quickstart_with(WAIT, AUTH_VARS).await;
    let base = format!("http://127.0.0.1:{port}/v1");
    let script = Script {
        program: &python,
        script: "sdk_test.py",
        sdk_dir: None,
        checks: CHECKS_WITH_AUTH,
        auth: true,
    };
    run(script, &base, &base).await;
}

#[tokio::test]
async fn node_sdk_against_the_quickstart() {
    let Some(dir) = node_sdk() else { return };
    let (_child, port) = start_quickstart_with(WAIT, AUTH_VARS).await;
    let base = format!("http://127.0.0.1:{port}/v1");
    let script = Script {
        program: Path::new("node"),
        script: "sdk_test.cjs",
        sdk_dir: Some(&dir),
        checks: CHECKS_WITH_AUTH,
        auth: true,
    };
    run(script, &base, &base).await;
}

/// A fake model that calls `get_weather` with `{"city":"Paris"}` when offered it, and
/// says [`TOOL_ANSWER`] once the result is in (or when no tool is offered).
async fn weather_model() -> FakeOpenAi {
    let then = Answer::new(["It ", "is ", "sunny ", "in ", "Paris."]);
    FakeOpenAi::start(Behaviour::call_tool(
        "get_weather",
        r#"{"city":"Paris"}"#,
        then,
    ))
    .await
}

/// What the model was sent: the client's tool offered, and after the client ran it, the
/// call and its result in the conversation (from the store, not from the client).
fn check_the_model_saw_the_tool_round(fake: &FakeOpenAi) {
    let bodies = fake.requests();
    let offered = bodies
        .iter()
        .find(|b| b["tools"].is_array())
        .expect("tools offered");
    assert_eq!(offered["tools"][0]["type"], "function");
    assert_eq!(offered["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        offered["tools"][0]["function"]["parameters"]["required"],
        serde_json::json!(["city"])
    );
    let answered = bodies
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["role"] == "tool")
        })
        .expect("a request with the tool's result");
    let messages = answered["messages"].as_array().expect("messages");
    let n = messages.len();
    assert_eq!(messages[n - 3]["role"], "user", "{messages:?}");
    assert_eq!(messages[n - 3]["content"], "Weather in Paris?");
    assert_eq!(messages[n - 2]["role"], "assistant");
    let call_id = &messages[n - 2]["tool_calls"][0]["id"];
    assert_eq!(
        messages[n - 2]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(messages[n - 1]["tool_call_id"], *call_id);
    let result: serde_json::Value =
        serde_json::from_str(messages[n - 1]["content"].as_str().expect("text")).expect("json");
    assert_eq!(result["temperature_c"], 21);
    // `tool_choice: "none"` offered nothing.
    assert!(
        bodies.iter().any(|b| b.get("tools").is_none()),
        "a request without tools"
    );
}

#[tokio::test]
async fn both_sdks_call_a_client_tool_through_the_quickstart() {
    let (Some(python), Some(node_dir)) = (python(), node_sdk()) else {
        return;
    };
    let fake = weather_model().await;
    let url = fake.base_url();
    let vars = [("OPENAI_URL", url.as_str()), ("OPENAI_MODEL", "fake-model")];
    let (_child, port) = start_quickstart_with(WAIT, &vars).await;
    let base = format!("http://127.0.0.1:{port}/v1");
    for (program, script, sdk_dir) in [
        (python.as_path(), "sdk_tools.py", None),
        (Path::new("node"), "sdk_tools.cjs", Some(node_dir.as_path())),
    ] {
        let script = Script {
            program,
            script,
            sdk_dir,
            checks: TOOL_CHECKS_WITH_CHAT,
            auth: false,
        };
        run(script, &base, &base).await;
    }
    check_the_model_saw_the_tool_round(&fake);
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

/// Starts `queue_worker` with `args` on the test's queues; its model is the scripted one,
/// or the OpenAI-compatible server at `model_url`.
async fn queue_worker(
    q: &Queues,
    prefix: &str,
    args: &[&str],
    model_url: Option<&str>,
) -> Started<Option<u16>> {
    let mut cmd = Command::new(example_path("queue_worker"));
    match model_url {
        None => cmd
            .env("CHATSTREAM_SCRIPTED", "1")
            .env("OPENAI_MODEL", "scripted"),
        Some(url) => cmd
            .env_remove("CHATSTREAM_SCRIPTED")
            .env("OPENAI_URL", url)
            .env("OPENAI_MODEL", "fake-model"),
    };
    cmd.args(args)
        .env("RABBITMQ_URL", amqp_url())
        .env_remove("CHATSTREAM_AMQP_URL")
        .env("RABBITMQ_QUEUE", &q.queue)
        .env("RABBITMQ_TOKEN_STREAM", &q.stream)
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

/// RabbitMQ queues and Redis keys of the test's own, or `None` after saying why the test
/// skips.
struct Rig {
    queues: Queues,
    prefix: String,
    _redis_keys: PrefixGuard,
}

async fn rig() -> Option<Rig> {
    let url = amqp_url();
    let client = match Connection::connect(&url, Default::default()).await {
        Ok(c) => c,
        Err(e) => return skip_or_fail("RabbitMQ", format!("{url}: {e}")),
    };
    let redis = connect_or_skip("responses-sdk").await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    Some(Rig {
        queues: Queues {
            client: Arc::new(client),
            queue: format!("e2e-responses-{}", &id[..12]),
            stream: format!("e2e-responses-{}.log", &id[..12]),
        },
        prefix: redis.keys().prefix().to_owned(),
        _redis_keys: PrefixGuard::new(&redis),
    })
}

fn base(s: &Started<Option<u16>>) -> String {
    match s.ready {
        Some(port) => format!("http://127.0.0.1:{port}/v1"),
        None => panic!("no REST port"),
    }
}

// Multi-threaded: the clean-up in `Queues::drop` blocks one thread while lapin's I/O runs
// on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sdks_against_queue_worker_on_rabbitmq_across_two_instances() {
    let (Some(python), Some(node_dir)) = (python(), node_sdk()) else {
        return;
    };
    let Some(rig) = rig().await else { return };
    let (q, prefix) = (&rig.queues, rig.prefix.as_str());
    let _worker = queue_worker(q, prefix, &["--worker-only"], None).await;
    let a = queue_worker(q, prefix, &["--rest-only"], None).await;
    let b = queue_worker(q, prefix, &["--rest-only"], None).await;
    let (base_a, base_b) = (base(&a), base(&b));
    let python = Script {
        program: &python,
        script: "sdk_test.py",
        sdk_dir: None,
        checks: CHECKS,
        auth: false,
    };
    run(python, &base_a, &base_b).await;
    let node = Script {
        program: Path::new("node"),
        script: "sdk_test.cjs",
        sdk_dir: Some(&node_dir),
        checks: CHECKS,
        auth: false,
    };
    run(node, &base_b, &base_a).await;
}

/// The client's tools cross RabbitMQ in seed 003's request body, which has no room for
/// them (an AMQP header carries them), and the model's call comes back over the token log
/// to another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_calls_a_client_tool_through_queue_worker_on_rabbitmq() {
    let Some(python) = python() else { return };
    let Some(rig) = rig().await else { return };
    let fake = weather_model().await;
    let url = fake.base_url();
    let (q, prefix) = (&rig.queues, rig.prefix.as_str());
    let _worker = queue_worker(q, prefix, &["--worker-only"], Some(&url)).await;
    let a = queue_worker(q, prefix, &["--rest-only"], Some(&url)).await;
    let b = queue_worker(q, prefix, &["--rest-only"], Some(&url)).await;
    let script = Script {
        program: &python,
        script: "sdk_tools.py",
        sdk_dir: None,
        checks: TOOL_CHECKS,
        auth: false,
    };
    run(script, &base(&a), &base(&b)).await;
    check_the_model_saw_the_tool_round(&fake);
}
