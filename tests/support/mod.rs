//! What the root integration tests share: the built example binaries as child processes,
//! time limits, raw HTTP/1.0 exchanges, and the broker URL of the tests.
//!
//! Each test crate declares `mod support;` (`#[path = "../support/mod.rs"]` from a test
//! crate in a folder of its own).

// Every test crate includes this module and uses a subset of it: the rest would be dead
// code there.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// `f`, or a panic naming `what` after `limit`.
pub(crate) async fn within<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// Runs `f` to its end on a runtime of its own, in a thread of its own, and waits: for
/// clean-up in `Drop`, which cannot await and may run while the test's runtime shuts down.
pub(crate) fn block_on_aside<F>(f: F)
where
    F: Future + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(f);
    })
    .join();
}

/// The RabbitMQ of the tests: `CHATSTREAM_AMQP_URL`, or the local default.
pub(crate) fn amqp_url() -> String {
    std::env::var("CHATSTREAM_AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The built example `name`, which `cargo test` puts next to the test binaries.
pub(crate) fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap_or_else(|| panic!("odd path {exe:?}"));
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{path:?} missing: run `cargo build --examples` first (a test filter skipped it)"
    );
    path
}

/// A child process that said it is ready.
#[derive(Debug)]
pub(crate) struct Started<T> {
    /// The process, killed when dropped.
    pub(crate) child: Child,
    /// What `ready` made of the line that said so.
    pub(crate) ready: T,
    /// Its later lines on stdout. Dropping this is fine: stdout is read on regardless, so
    /// the child never blocks on a full pipe.
    pub(crate) lines: mpsc::UnboundedReceiver<String>,
}

/// Spawns `cmd` (stdin closed, stdout read line by line, killed when dropped) and waits,
/// at most `limit`, for the first stdout line `ready` accepts. Panics naming `what` when the
/// process ends its output first.
pub(crate) async fn start<T>(
    mut cmd: Command,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut(&str) -> Option<T>,
) -> Started<T> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, mut lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    let ready = within(&format!("{what}'s ready line"), limit, async {
        while let Some(line) = lines.recv().await {
            if let Some(ready) = ready(&line) {
                return ready;
            }
        }
        panic!("{what} exited before it was ready");
    })
    .await;
    Started {
        child,
        ready,
        lines,
    }
}

/// The port number right after `prefix` in `line` (`http://127.0.0.1:` in a URL).
pub(crate) fn port_after(line: &str, prefix: &str) -> Option<u16> {
    let rest = line.split(prefix).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Starts the quickstart example on a free port of 127.0.0.1 with the scripted backend
/// (one word every 30 ms); returns it and its port.
pub(crate) async fn start_quickstart(limit: Duration) -> (Child, u16) {
    start_quickstart_with(limit, &[]).await
}

/// [`start_quickstart`] with more environment variables.
pub(crate) async fn start_quickstart_with(limit: Duration, vars: &[(&str, &str)]) -> (Child, u16) {
    let mut cmd = Command::new(example_path("quickstart"));
    cmd.env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env_remove("OPENAI_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("CHATSTREAM_API_TOKENS")
        .env_remove("CHATSTREAM_STREAM_AUTH")
        .env("LOG_LEVEL", "warning");
    cmd.envs(vars.iter().copied());
    let started = start(cmd, "quickstart", limit, |line| {
        port_after(line, "http://127.0.0.1:")
    })
    .await;
    (started.child, started.ready)
}

/// Sends `sig` (`-TERM`, `-KILL`) to `child`.
pub(crate) fn signal(child: &Child, sig: &str) {
    let pid = child
        .id()
        .unwrap_or_else(|| panic!("no pid: already reaped"));
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

/// One HTTP/1.0 exchange with 127.0.0.1:`port` (close-delimited body), each step within
/// `limit`: `head` is the request line and any headers; returns the status line and the
/// body.
pub(crate) async fn http(port: u16, head: &str, body: &str, limit: Duration) -> (String, String) {
    let mut s = within("connect", limit, TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let req = format!(
        "{head}\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    within("write", limit, s.write_all(req.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    within("read", limit, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Longest one step of an [`SseClient`] may take (connect, write, the response head).
const SSE_STEP: Duration = Duration::from_secs(60);

/// One SSE client over HTTP/1.0 (close-delimited body): the events as they arrive.
#[derive(Debug)]
pub(crate) struct SseClient {
    stream: TcpStream,
    buf: String,
    pub(crate) status: u16,
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

impl SseClient {
    /// `GET path`, with `Last-Event-ID` when given; reads the status line and headers.
    pub(crate) async fn get(port: u16, path: &str, last_event_id: Option<&str>) -> Self {
        let mut stream = within("connect", SSE_STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let extra = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\n{extra}\r\n");
        within("write", SSE_STEP, stream.write_all(req.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut client = Self {
            stream,
            buf: String::new(),
            status: 0,
        };
        let head = within("response head", SSE_STEP, client.read_until("\r\n\r\n")).await;
        let head = head.unwrap_or_else(|| panic!("connection closed before the head"));
        client.status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        client
    }

    async fn read_until(&mut self, sep: &str) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find(sep) {
                let out = self.buf[..i].to_owned();
                self.buf.drain(..i + sep.len());
                return Some(out);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    }

    /// The next event with data (comments skipped); `None` when the server closed.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        loop {
            let block = self.read_until("\n\n").await?;
            let mut event = Event::default();
            let mut has_data = false;
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    event.id = Some(id.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(d);
                    has_data = true;
                }
            }
            if has_data {
                return Some(event);
            }
        }
    }
}
