//! A TCP proxy between the browser and the quickstart that cuts the first answer stream
//! after a few events ([`start`]) or cuts nothing ([`start_passthrough`]), and notes how the
//! browser asked for its streams and came back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Events of the first stream that reach the browser before its connection is cut.
const EVENTS_BEFORE_CUT: usize = 3;

/// What the proxy saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Requests for an answer stream (`GET /api/stream/…`).
    pub(crate) stream_requests: AtomicUsize,
    /// Whether the first stream's connection was cut.
    pub(crate) cut: AtomicBool,
    /// The `Last-Event-ID` of the first stream request that carried one.
    pub(crate) resumed_after: Mutex<Option<String>>,
    /// The request line of every stream request (`GET /api/stream/… HTTP/1.1`).
    pub(crate) stream_lines: Mutex<Vec<String>>,
    /// Only the first stream is cut.
    armed: AtomicBool,
}

/// Listens on a free port of 127.0.0.1, forwarding to `upstream` and cutting the first
/// stream; returns the port.
pub(crate) async fn start(upstream: u16) -> std::io::Result<(u16, Arc<Seen>)> {
    listen(upstream, true).await
}

/// Like [`start`], but cuts nothing: it only notes the stream requests.
pub(crate) async fn start_passthrough(upstream: u16) -> std::io::Result<(u16, Arc<Seen>)> {
    listen(upstream, false).await
}

async fn listen(upstream: u16, cut: bool) -> std::io::Result<(u16, Arc<Seen>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Seen {
        armed: AtomicBool::new(cut),
        ..Seen::default()
    });
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((browser, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    relay(browser, server, &seen).await;
                }
            });
        }
    });
    Ok((port, seen))
}

/// Copies both ways until either side closes, or until this connection's stream is cut.
async fn relay(browser: TcpStream, server: TcpStream, seen: &Seen) {
    let (mut from_browser, mut to_browser) = browser.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Set once the browser asked this connection for the stream that is to be cut; HTTP/1.1
    // requests on one connection take turns, so what the server sends afterwards is that
    // stream.
    let victim = AtomicBool::new(false);
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from_browser.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            inspect_request(&buf[..n], seen, &victim);
            if to_server.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut events = 0;
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if to_browser.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if victim.load(Ordering::SeqCst) {
                events += count(&buf[..n], b"data: ");
                if events >= EVENTS_BEFORE_CUT {
                    seen.cut.store(true, Ordering::SeqCst);
                    return; // both halves drop: the connection closes mid-stream
                }
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

fn inspect_request(bytes: &[u8], seen: &Seen, victim: &AtomicBool) {
    let text = String::from_utf8_lossy(bytes);
    if !text.starts_with("GET /api/stream/") {
        return;
    }
    seen.stream_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(line) = text.lines().next() {
        let mut lines = seen.stream_lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(line.to_owned());
    }
    let last_event_id = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("last-event-id")
            .then(|| value.trim().to_owned())
    });
    if let Some(id) = last_event_id {
        let mut resumed = seen.resumed_after.lock().unwrap_or_else(|p| p.into_inner());
        resumed.get_or_insert(id);
    } else if seen.armed.swap(false, Ordering::SeqCst) {
        victim.store(true, Ordering::SeqCst);
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}
