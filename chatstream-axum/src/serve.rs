//! Serving a router in front of a [`Gateway`]: `TCP_NODELAY` on every connection, and a
//! graceful shutdown that ends the open streams first.
//!
//! `axum::serve(listener, app).with_graceful_shutdown(signal)` alone waits for every
//! connection to close, and an SSE or WebSocket client streaming an answer never closes by
//! itself, so the server would not stop until the answers ended. [`serve`] calls
//! [`Gateway::shutdown`] when the signal comes: every open stream ends at once with the
//! "shutting down" error of its protocol (seed 001: `{"error": …}` then `__END__`), the
//! connections close, and the server stops.

use std::future::Future;

use axum::serve::ListenerExt;
use axum::Router;
use chatstream_core::Gateway;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `signal` resolves, then ends `gateway`'s client streams
/// ([`Gateway::shutdown`]) and returns once every connection has closed.
///
/// Every accepted connection gets `TCP_NODELAY`: each SSE frame or WebSocket message is a
/// small write, which Nagle's algorithm would otherwise hold back until the client
/// acknowledges the previous one (up to 40 ms with delayed ACKs).
///
/// `signal` is usually [`shutdown_signal`](chatstream_core::worker::shutdown_signal)
/// (Ctrl-C or SIGTERM). Bind the listener first, so the address can be printed:
///
/// ```no_run
/// # async fn run(gateway: chatstream_core::Gateway) -> std::io::Result<()> {
/// use chatstream_axum::{seed001, ChatstreamState};
/// use chatstream_core::worker::shutdown_signal;
///
/// let app = seed001::router(ChatstreamState::new(gateway.clone()));
/// let listener = tokio::net::TcpListener::bind(("127.0.0.1", 8001)).await?;
/// println!("listening on http://{}", listener.local_addr()?);
/// chatstream_axum::serve(listener, app, gateway, shutdown_signal()).await
/// # }
/// ```
///
/// # Errors
///
/// What `axum::serve` returns (in practice never: accept errors are retried).
pub async fn serve<S>(
    listener: TcpListener,
    app: Router,
    gateway: Gateway,
    signal: S,
) -> std::io::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let shutdown = async move {
        signal.await;
        tracing::info!("shutting down");
        gateway.shutdown();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chatstream_core::InMemoryBroker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::{seed001, ChatstreamState};

    const WAIT: Duration = Duration::from_secs(10);

    /// Sends a raw HTTP/1.0 request; returns the connection to read the answer from.
    async fn get(port: u16, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        s
    }

    /// Reads until `want` has arrived (or the connection closed); returns what came.
    async fn read_until(s: &mut TcpStream, want: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(want) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn the_signal_ends_open_streams_and_the_server_stops() {
        let broker = InMemoryBroker::new();
        let gateway = Gateway::builder(Arc::new(broker.clone()), Arc::new(broker.clone())).build();
        let app = seed001::router(ChatstreamState::new(gateway.clone()));
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, gateway, async {
            let _ = stopped.await;
        }));

        // It serves until the signal.
        let mut health = get(port, "/health").await;
        let answer = tokio::time::timeout(WAIT, read_until(&mut health, "healthy"))
            .await
            .unwrap_or_else(|_| panic!("no /health answer within {WAIT:?}"));
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

        // A client waiting on an answer that never comes…
        let mut sse = get(port, "/api/stream/s-1/m-1").await;
        let head = tokio::time::timeout(WAIT, read_until(&mut sse, "\r\n\r\n"))
            .await
            .unwrap_or_else(|_| panic!("no SSE head within {WAIT:?}"));
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");

        // …gets an error and the end when the signal comes, and the server stops.
        let _ = stop.send(());
        let mut rest = String::new();
        tokio::time::timeout(WAIT, sse.read_to_string(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the stream stayed open after the signal"))
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(rest.contains("data: {\"error\": "), "{rest:?}");
        assert!(rest.ends_with("data: __END__\n\n"), "{rest:?}");
        let served = tokio::time::timeout(WAIT, server)
            .await
            .unwrap_or_else(|_| panic!("the server did not stop within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("server task: {e}"));
        assert!(served.is_ok(), "{served:?}");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "the port is closed"
        );
    }
}
