//! The quickstart page in a real headless Chromium, driven through chromedriver: type a
//! message, send it, watch the answer stream in. A TCP proxy between the browser and the
//! quickstart binary cuts the answer's connection after a few events; the page's
//! `EventSource` reconnects with `Last-Event-ID`, and the text on the page must end up as
//! the scripted answer exactly once — no word missing, none repeated.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Without them the test skips with a line on stderr, unless
//! `CHATSTREAM_REQUIRE_SERVICES=1`, where it fails. Like `quickstart_example.rs` it starts
//! the built example (`cargo build --example quickstart` when a filter skipped that).
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
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
/// How often the page is looked at while waiting for something to show.
const POLL: Duration = Duration::from_millis(25);
const TEXT: &str = "Tell me how streaming works";

/// What the page shows, read by one script.
const READ_PAGE: &str = r#"
const bubbles = document.querySelectorAll('#log .msg.assistant');
const b = bubbles[bubbles.length - 1];
const all = (sel) => Array.from(document.querySelectorAll(sel), (e) => e.textContent);
return {
  text: b ? b.textContent : null,
  messageId: b ? (b.dataset.messageId || null) : null,
  streaming: b ? b.classList.contains('streaming') : false,
  idle: !document.getElementById('send').disabled,
  notes: all('#log .note'),
  errors: all('#log .error'),
};
"#;

#[tokio::test]
async fn the_quickstart_page_streams_an_answer_and_resumes_after_a_cut() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let (_app, app_port) = support::start_quickstart(WAIT).await;
    let (proxy_port, seen) = proxy::start(app_port)
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    let (_driver, driver_port) = start_chromedriver(&chromedriver).await;
    let profile = Profile::new();
    let client = open_browser(driver_port, &chromium, &profile.0).await;
    let outcome = drive(&client, proxy_port, &seen).await;
    let _ = client.close().await;
    if let Err(e) = outcome {
        panic!("{e}\nproxy saw: {seen:?}");
    }
}

/// Sends the message and checks what the page shows; `Err` says what went wrong.
async fn drive(client: &Client, port: u16, seen: &proxy::Seen) -> Result<(), String> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: fantoccini::error::CmdError| format!("{what}: {e}")
    };
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(fail("open the page"))?;
    let input = client
        .find(Locator::Id("text"))
        .await
        .map_err(fail("find #text"))?;
    input.send_keys(TEXT).await.map_err(fail("type"))?;
    let send = client
        .find(Locator::Id("send"))
        .await
        .map_err(fail("find #send"))?;
    send.click().await.map_err(fail("click send"))?;

    // Every text the answer showed while streaming, in order, and the final state.
    let mut shown: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let page = client
            .execute(READ_PAGE, vec![])
            .await
            .map_err(fail("read the page"))?;
        if !page["errors"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("the page shows an error: {page}"));
        }
        let text = page["text"].as_str().unwrap_or_default();
        if !text.is_empty() && shown.last().map(String::as_str) != Some(text) {
            shown.push(text.to_owned());
        }
        let finished = page["idle"] == json!(true) && page["streaming"] == json!(false);
        if finished && !text.is_empty() {
            break page;
        }
        if Instant::now() > deadline {
            return Err(format!("no complete answer within {WAIT:?}; page: {page}"));
        }
        tokio::time::sleep(POLL).await;
    };

    let message_id = last["messageId"]
        .as_str()
        .ok_or_else(|| format!("no message id on the answer: {last}"))?;
    let request = ChatRequest::new(StreamKey::new("any", message_id), TEXT);
    let expected = ScriptedBackend::default().answer(&request);
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

/// `chromium` and `chromedriver`, or `None` after saying why the test is skipped.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| which(n));
    match (chromium, which("chromedriver")) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
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
