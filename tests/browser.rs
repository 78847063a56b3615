//! The quickstart page in a real headless Chromium, driven through chromedriver.
//!
//! - Type a message, send it, watch the answer stream in. A TCP proxy between the browser
//!   and the quickstart binary cuts the answer's connection after a few events; the page's
//!   `EventSource` reconnects with `Last-Event-ID`, and the text on the page must end up as
//!   the scripted answer exactly once — no word missing, none repeated.
//! - Stop mid-answer: the Stop button goes away, the answer stays as far as it got, marked
//!   as stopped, and the server agrees: the stream ended with exactly that text, the worker
//!   stored exactly that partial answer, and a cancel was published. A reload shows it so.
//! - Reload mid-answer: the page shows the earlier exchange, the question, and the whole
//!   answer exactly once, resumed with `?lastEventId=` where it was.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Without them the tests skip with a line on stderr, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`, where they fail. Like `quickstart_example.rs` they start
//! the built example (`cargo build --example quickstart` when a filter skipped that). One
//! browser runs at a time.
#![cfg(unix)]

#[path = "browser/proxy.rs"]
mod proxy;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chatstream_core::{ChatRequest, ScriptedBackend, StreamKey};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
/// How often the page is looked at while waiting for something to show.
const POLL: Duration = Duration::from_millis(25);
const TEXT: &str = "Tell me how streaming works";
const FIRST: &str = "What is a broker";
/// The scripted backend's pause between words in the stop and reload tests (`TOKEN_DELAY_MS`
/// of the example): an answer takes about five seconds, time enough to act in the middle.
const SLOW_WORD_MS: &str = "250";

/// One browser at a time: two cores do not start several Chromiums quickly.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the page shows, read by one script.
const READ_PAGE: &str = r#"
const bubbles = document.querySelectorAll('#log .msg.assistant');
const b = bubbles[bubbles.length - 1];
const all = (sel) => Array.from(document.querySelectorAll(sel), (e) => e.textContent);
const kind = (e) => ['user', 'assistant', 'error', 'note'].find((k) => e.classList.contains(k));
return {
  text: b ? b.textContent : null,
  messageId: b ? (b.dataset.messageId || null) : null,
  streaming: b ? b.classList.contains('streaming') : false,
  stopped: b ? b.classList.contains('stopped') : false,
  idle: !document.getElementById('send').disabled,
  stopShown: !document.getElementById('stop').hidden,
  session: new URLSearchParams(location.search).get('session'),
  log: Array.from(document.querySelectorAll('#log .msg'), (e) => [kind(e), e.textContent]),
  notes: all('#log .note'),
  errors: all('#log .error'),
};
"#;

#[tokio::test]
async fn the_quickstart_page_streams_an_answer_and_resumes_after_a_cut() {
    let _one = ONE_BROWSER.lock().await;
    let Some(tools) = browser_tools() else {
        return;
    };
    let (_app, app_port) = support::start_quickstart(WAIT).await;
    let (proxy_port, seen) = proxy::start(app_port)
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    let browser = Browser::open(&tools).await;
    let outcome = drive(&browser.client, proxy_port, &seen).await;
    browser.close().await;
    if let Err(e) = outcome {
        panic!("{e}\nproxy saw: {seen:?}");
    }
}

#[tokio::test]
async fn stop_ends_the_answer_where_it_is_on_the_page_and_in_the_worker() {
    let _one = ONE_BROWSER.lock().await;
    let Some(tools) = browser_tools() else {
        return;
    };
    let (_app, port) = start_slow_quickstart().await;
    let browser = Browser::open(&tools).await;
    let outcome = stop_mid_answer(&browser.client, port).await;
    browser.close().await;
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_reload_mid_answer_shows_the_chat_and_the_whole_answer_once() {
    let _one = ONE_BROWSER.lock().await;
    let Some(tools) = browser_tools() else {
        return;
    };
    let (_app, app_port) = start_slow_quickstart().await;
    let (proxy_port, seen) = proxy::start_passthrough(app_port)
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    let browser = Browser::open(&tools).await;
    let outcome = reload_mid_answer(&browser.client, proxy_port, &seen).await;
    browser.close().await;
    if let Err(e) = outcome {
        panic!("{e}\nproxy saw: {seen:?}");
    }
}

fn fail(what: &str) -> impl FnOnce(fantoccini::error::CmdError) -> String {
    let what = what.to_owned();
    move |e| format!("{what}: {e}")
}

/// What the page shows now; `Err` when it shows an error.
async fn read_page(client: &Client) -> Result<Value, String> {
    let page = client
        .execute(READ_PAGE, vec![])
        .await
        .map_err(fail("read the page"))?;
    if !page["errors"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("the page shows an error: {page}"));
    }
    Ok(page)
}

/// Reads the page until `done` accepts it, at most [`WAIT`]; `what` names the wait.
async fn wait_for(
    client: &Client,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let page = read_page(client).await?;
        if done(&page) {
            return Ok(page);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {WAIT:?}; page: {page}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The page's answer is over: no cursor, no Stop button, the input back.
fn finished(page: &Value) -> bool {
    page["idle"] == json!(true)
        && page["streaming"] == json!(false)
        && page["stopShown"] == json!(false)
        && !page["text"].as_str().unwrap_or_default().is_empty()
}

fn str_of<'a>(page: &'a Value, field: &str) -> Result<&'a str, String> {
    page[field]
        .as_str()
        .ok_or_else(|| format!("no {field} on the page: {page}"))
}

/// Types `text` and clicks Send.
async fn send(client: &Client, text: &str) -> Result<(), String> {
    let input = client
        .find(Locator::Id("text"))
        .await
        .map_err(fail("find #text"))?;
    input.send_keys(text).await.map_err(fail("type"))?;
    let send = client
        .find(Locator::Id("send"))
        .await
        .map_err(fail("find #send"))?;
    send.click().await.map_err(fail("click send"))
}

/// The scripted answer to `text` sent as message `message_id`.
fn scripted(message_id: &str, text: &str) -> String {
    let request = ChatRequest::new(StreamKey::new("any", message_id), text);
    ScriptedBackend::default().answer(&request)
}

/// Sends the message and checks what the page shows; `Err` says what went wrong.
async fn drive(client: &Client, port: u16, seen: &proxy::Seen) -> Result<(), String> {
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(fail("open the page"))?;
    send(client, TEXT).await?;

    // Every text the answer showed while streaming, in order, and the final state.
    let mut shown: Vec<String> = Vec::new();
    let last = wait_for(client, "a complete answer", |page| {
        let text = page["text"].as_str().unwrap_or_default();
        if !text.is_empty() && shown.last().map(String::as_str) != Some(text) {
            shown.push(text.to_owned());
        }
        finished(page)
    })
    .await?;

    let expected = scripted(str_of(&last, "messageId")?, TEXT);
    let text = last["text"].as_str().unwrap_or_default();
    if text != expected {
        return Err(format!(
            "the answer on the page is not the scripted answer exactly once\n page: {text:?}\n want: {expected:?}"
        ));
    }
    if let Some(bad) = shown.iter().find(|t| !expected.starts_with(t.as_str())) {
        return Err(format!(
            "the page showed text that is not a prefix of the answer: {bad:?}"
        ));
    }
    if !shown.iter().any(|t| t.len() < expected.len()) {
        return Err(format!("the answer never showed partly: {shown:?}"));
    }
    if !seen.cut.load(Ordering::SeqCst) {
        return Err("the proxy never cut the stream (answer shorter than expected?)".into());
    }
    let resumed = seen
        .resumed_after
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if resumed.is_none_or(|id| id.parse::<u64>().is_err()) {
        return Err("the browser did not reconnect with a numeric Last-Event-ID".into());
    }
    let noticed = last["notes"].as_array().is_some_and(|notes| {
        notes
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("connection lost")))
    });
    if !noticed {
        return Err(format!("the page did not notice the cut: {last}"));
    }
    Ok(())
}

/// Clicks Stop in the middle of an answer and checks the page and the server.
async fn stop_mid_answer(client: &Client, port: u16) -> Result<(), String> {
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(fail("open the page"))?;
    send(client, TEXT).await?;
    let streaming = wait_for(client, "the answer streaming, with Stop", |p| {
        p["stopShown"] == json!(true)
            && p["streaming"] == json!(true)
            && !p["text"].as_str().unwrap_or_default().is_empty()
    })
    .await?;
    client
        .find(Locator::Id("stop"))
        .await
        .map_err(fail("find #stop"))?
        .click()
        .await
        .map_err(fail("click stop"))?;
    let stopped = wait_for(client, "the answer marked as stopped, Stop gone", |p| {
        finished(p) && p["stopped"] == json!(true)
    })
    .await?;

    let message_id = str_of(&stopped, "messageId")?;
    let session = str_of(&stopped, "session")?;
    let full = scripted(message_id, TEXT);
    let before = str_of(&streaming, "text")?;
    let text = str_of(&stopped, "text")?;
    if !text.starts_with(before) || !full.starts_with(text) || text.len() >= full.len() {
        return Err(format!(
            "the stopped answer is not a part of the answer that grew from what was shown\n \
             before the click: {before:?}\n after: {text:?}\n whole: {full:?}"
        ));
    }

    // The server: the stream ended, with exactly the text the page shows…
    let path = format!("/api/stream/{session}/{message_id}");
    let (status, sse) = support::http(port, &format!("GET {path} HTTP/1.0"), "", WAIT).await;
    if !status.contains(" 200 ") || !sse.ends_with("data: __END__\n\n") {
        return Err(format!("the stream did not end: {status}\n{sse:?}"));
    }
    let streamed = tokens(&sse);
    if streamed != text {
        return Err(format!("the stream says {streamed:?}, the page {text:?}"));
    }
    // …the worker stopped and stored what it had said…
    let history = history(port, session).await?;
    let want = json!([
        {"role": "user", "content": TEXT},
        {"role": "assistant", "content": text},
    ]);
    if history != want {
        return Err(format!("the stored exchange is {history}, want {want}"));
    }
    // …after a cancel from the gateway.
    let cancels = metric(port, "chatstream_cancels_published_total").await?;
    if cancels < 1.0 {
        return Err(format!("no cancel published ({cancels})"));
    }
    // With the stream over on the server, the page still shows the same text.
    let again = read_page(client).await?;
    if again["text"] != stopped["text"] || again["stopped"] != json!(true) {
        return Err(format!("the page changed after the end: {again}"));
    }
    // A reload shows the stopped exchange once, still marked as stopped.
    client.refresh().await.map_err(fail("reload"))?;
    let want = json!([["user", TEXT], ["assistant", text]]);
    wait_for(client, "the stopped exchange after a reload", |p| {
        p["log"] == want && p["stopped"] == json!(true) && p["idle"] == json!(true)
    })
    .await?;
    Ok(())
}

/// Reloads the page in the middle of the second answer of a chat and checks that the chat
/// comes back whole.
async fn reload_mid_answer(client: &Client, port: u16, seen: &proxy::Seen) -> Result<(), String> {
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(fail("open the page"))?;
    send(client, FIRST).await?;
    let first = wait_for(client, "the first answer", finished).await?;
    let first_id = str_of(&first, "messageId")?.to_owned();
    let first_answer = scripted(&first_id, FIRST);
    if first["text"] != json!(first_answer) {
        return Err(format!("first answer: {first}"));
    }

    send(client, TEXT).await?;
    let partly = wait_for(client, "the second answer partly shown", |p| {
        p["streaming"] == json!(true)
            && p["messageId"].as_str().is_some_and(|id| id != first_id)
            && p["text"].as_str().unwrap_or_default().split(' ').count() >= 3
    })
    .await?;
    let message_id = str_of(&partly, "messageId")?.to_owned();
    let session = str_of(&partly, "session")?.to_owned();
    let answer = scripted(&message_id, TEXT);
    if partly["text"].as_str().unwrap_or_default().len() >= answer.len() {
        return Err(format!("the answer was over before the reload: {partly}"));
    }

    client.refresh().await.map_err(fail("reload"))?;
    let mut shown: Vec<String> = Vec::new();
    let last = wait_for(client, "the second answer after the reload", |p| {
        if p["messageId"] != json!(message_id) {
            return false;
        }
        let text = p["text"].as_str().unwrap_or_default();
        if shown.last().map(String::as_str) != Some(text) {
            shown.push(text.to_owned());
        }
        finished(p)
    })
    .await?;

    let want = json!([
        ["user", FIRST],
        ["assistant", first_answer],
        ["user", TEXT],
        ["assistant", answer],
    ]);
    if last["log"] != want {
        return Err(format!(
            "after the reload the page shows\n {}\nwant\n {want}",
            last["log"]
        ));
    }
    if last["session"] != json!(session) {
        return Err(format!("the session changed: {last}"));
    }
    if let Some(bad) = shown.iter().find(|t| !answer.starts_with(t.as_str())) {
        return Err(format!("after the reload the page showed {bad:?}"));
    }
    if !shown.iter().any(|t| t.len() < answer.len()) {
        return Err(format!(
            "the answer was not in flight after the reload: {shown:?}"
        ));
    }
    let lines = seen
        .stream_lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let resumed = lines.iter().any(|l| {
        l.contains(&message_id)
            && l.split("lastEventId=")
                .nth(1)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    if !resumed {
        return Err(format!(
            "the reloaded page did not resume the stream with ?lastEventId=: {lines:?}"
        ));
    }
    Ok(())
}

/// The text of the `{"token": …}` frames of an SSE body.
fn tokens(sse: &str) -> String {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_owned))
        .collect()
}

/// The stored messages of `session`, as `[{"role", "content"}]`.
async fn history(port: u16, session: &str) -> Result<Value, String> {
    let head = format!("GET /api/chat/{session}/messages HTTP/1.0");
    let (status, body) = support::http(port, &head, "", WAIT).await;
    if !status.contains(" 200 ") {
        return Err(format!("history: {status} {body}"));
    }
    let json: Value = serde_json::from_str(&body).map_err(|e| format!("history {body}: {e}"))?;
    Ok(json["messages"].clone())
}

/// The value of the unlabelled metric `name` at `/metrics`.
async fn metric(port: u16, name: &str) -> Result<f64, String> {
    let (status, body) = support::http(port, "GET /metrics HTTP/1.0", "", WAIT).await;
    if !status.contains(" 200 ") {
        return Err(format!("/metrics: {status}"));
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("no {name} in /metrics:\n{body}"))
}

/// The quickstart with a slow scripted backend ([`SLOW_WORD_MS`]); returns it and its port.
async fn start_slow_quickstart() -> (Child, u16) {
    let mut cmd = Command::new(support::example_path("quickstart"));
    cmd.env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env_remove("OPENAI_URL")
        .env_remove("OPENAI_API_KEY")
        .env("TOKEN_DELAY_MS", SLOW_WORD_MS)
        .env("LOG_LEVEL", "warning");
    let started = support::start(cmd, "quickstart", WAIT, |line| {
        support::port_after(line, "http://127.0.0.1:")
    })
    .await;
    (started.child, started.ready)
}

/// The browser tools found on `PATH`.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// A headless Chromium driven through its own chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    _driver: Child,
    _profile: Profile,
}

impl Browser {
    async fn open(tools: &Tools) -> Self {
        let (driver, driver_port) = start_chromedriver(&tools.chromedriver).await;
        let profile = Profile::new();
        let client = open_browser(driver_port, &tools.chromium, &profile.0).await;
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `chromium` and `chromedriver`, or `None` after saying why the test is skipped.
fn browser_tools() -> Option<Tools> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| which(n));
    match (chromium, which("chromedriver")) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        (browser, _) => {
            let missing = if browser.is_none() {
                "chromium"
            } else {
                "chromedriver"
            };
            let why =
                format!("{missing} is not installed (apt-get install chromium chromium-driver)");
            if std::env::var("CHATSTREAM_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{why}, and CHATSTREAM_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping the browser test: {why}");
            None
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A fresh Chromium profile directory, removed afterwards.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("chatstream-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("profile dir {dir:?}: {e}"));
        Self(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open_browser(driver_port: u16, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1024,768",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium, "args": args}),
    );
    let connect = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await;
    match tokio::time::timeout(WAIT, async { connect }).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("cannot start Chromium through chromedriver: {e}"),
        Err(_) => panic!("chromedriver did not start Chromium within {WAIT:?}"),
    }
}

async fn start_chromedriver(chromedriver: &Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"));
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn chromedriver: {e}"));
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver not listening on {port} after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    (child, port)
}
