//! Just enough HTTP/1.1: read one request, write one response.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Framing, MAX_BODY, MAX_HEAD};

/// A parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) body: Vec<u8>,
    /// The W3C `traceparent` header, when sent.
    pub(super) traceparent: Option<String>,
}

/// Why a request could not be read: the status to answer with.
pub(super) type Refusal = (u16, &'static str);

pub(super) async fn read_request(socket: &mut TcpStream) -> Option<Result<Request, Refusal>> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Some(Err((431, "request head too large")));
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Some(Err((400, "malformed request line")));
    };
    let mut length = 0usize;
    let mut traceparent = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Some(Err((400, "malformed header")));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => length = n,
                Ok(_) => return Some(Err((413, "request body too large"))),
                Err(_) => return Some(Err((400, "malformed Content-Length"))),
            }
        } else if name.eq_ignore_ascii_case("traceparent") {
            traceparent = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Some(Err((411, "send a Content-Length, not a chunked body")));
        }
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    let path = target.split('?').next().unwrap_or("").to_owned();
    Some(Ok(Request {
        method: method.to_owned(),
        path,
        body,
        traceparent,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub(super) async fn respond(
    socket: &mut TcpStream,
    status: u16,
    body: &Value,
) -> std::io::Result<()> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.flush().await
}

pub(super) async fn respond_error(
    socket: &mut TcpStream,
    status: u16,
    message: &str,
) -> std::io::Result<()> {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    respond(socket, status, &body).await
}

pub(super) async fn write_sse_head(
    socket: &mut TcpStream,
    framing: Framing,
) -> std::io::Result<()> {
    let encoding = match framing {
        Framing::Chunked => "Transfer-Encoding: chunked\r\n",
        Framing::CloseDelimited => "",
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{encoding}Connection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await
}

pub(super) async fn write_event(
    socket: &mut TcpStream,
    framing: Framing,
    data: &str,
) -> std::io::Result<()> {
    let event = format!("data: {data}\n\n");
    let bytes = match framing {
        Framing::Chunked => format!("{:x}\r\n{event}\r\n", event.len()),
        Framing::CloseDelimited => event,
    };
    socket.write_all(bytes.as_bytes()).await?;
    socket.flush().await
}
