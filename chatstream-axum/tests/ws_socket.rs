//! `/ws` over a real socket with a real WebSocket client (tokio-tungstenite), and the
//! HTTP side of the route.

mod common;

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::Router;
use chatstream_axum::{seed001, ws};
use chatstream_core::wire::seed004::{parse_message, WsMessage};
use chatstream_core::ScriptedBackend;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The routes as an application mounts them: fallbacks last, so they cover `/ws` too.
fn app(p: &Pipeline) -> Router {
    seed001::router(p.state.clone())
        .merge(ws::router(p.state.clone()))
        .fallback(chatstream_axum::not_found)
        .method_not_allowed_fallback(chatstream_axum::method_not_allowed)
}

async fn serve(p: &Pipeline) -> SocketAddr {
    let listener = within(TcpListener::bind("127.0.0.1:0"))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let app = app(p);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn connect(addr: SocketAddr) -> Socket {
    match within(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))).await {
        Ok((socket, response)) => {
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            socket
        }
        Err(e) => panic!("connect: {e}"),
    }
}

async fn send(socket: &mut Socket, message: Message) {
    if let Err(e) = within(socket.send(message)).await {
        panic!("send: {e}");
    }
}

async fn next(socket: &mut Socket) -> Message {
    match within(socket.next()).await {
        Some(Ok(m)) => m,
        other => panic!("socket ended: {other:?}"),
    }
}

async fn next_message(socket: &mut Socket) -> WsMessage {
    loop {
        match next(socket).await {
            Message::Text(t) => return parse_message(&t).unwrap_or_else(|e| panic!("{e}: {t}")),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_browser_like_client_asks_subscribes_and_pings() {
    let p = Pipeline::new(ScriptedBackend::default());
    let addr = serve(&p).await;
    let mut asker = connect(addr).await;
    let mut watcher = connect(addr).await;

    send(
        &mut watcher,
        Message::text(r#"{"action":"subscribe","channel":"c1"}"#),
    )
    .await;
    send(&mut watcher, Message::text(r#"{"action":"ping"}"#)).await;
    assert_eq!(next_message(&mut watcher).await.kind, "pong");

    // A WebSocket ping frame is answered with a pong frame carrying the same payload.
    send(&mut asker, Message::Ping(b"hb".to_vec().into())).await;
    match next(&mut asker).await {
        Message::Pong(payload) => assert_eq!(&payload[..], b"hb"),
        other => panic!("expected a pong, got {other:?}"),
    }

    let ask = r#"{"action":"message","channel":"c1","message_id":"m1","message":"hi there"}"#;
    send(&mut asker, Message::text(ask)).await;
    for socket in [&mut asker, &mut watcher] {
        let mut text = String::new();
        let last = loop {
            let m = next_message(socket).await;
            assert_eq!(m.message_id, "m1");
            if m.status == "in_progress" {
                text.push_str(&m.message);
            }
            if m.final_message == Some(true) {
                break m;
            }
        };
        assert_eq!(last.status, "completed");
        assert_eq!(last.message, text);
        assert!(text.contains("hi there"), "{text}");
    }

    send(&mut asker, Message::text("{oops")).await;
    let m = next_message(&mut asker).await;
    assert_eq!(m.error_details.as_deref(), Some("invalid_json"));
    send(&mut asker, Message::text(r#"{"action":"ping"}"#)).await;
    assert_eq!(next_message(&mut asker).await.kind, "pong");

    // A clean close is answered with a close.
    send(&mut asker, Message::Close(None)).await;
    loop {
        match within(asker.next()).await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("close failed: {e}"),
        }
    }
}

#[tokio::test]
async fn an_oversize_message_closes_the_connection() {
    let p = Pipeline::new(ScriptedBackend::default());
    let addr = serve(&p).await;
    let mut socket = connect(addr).await;
    let huge = format!(
        r#"{{"action":"message","channel":"c","message_id":"m","message":"{}"}}"#,
        "x".repeat(chatstream_axum::DEFAULT_BODY_LIMIT + 1)
    );
    send(&mut socket, Message::text(huge)).await;
    loop {
        match within(socket.next()).await {
            Some(Ok(Message::Close(frame))) => {
                if let Some(f) = frame {
                    assert_eq!(u16::from(f.code), 1009, "message too big");
                }
                break;
            }
            Some(Ok(Message::Text(t))) => panic!("the message was handled: {t}"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn plain_http_to_ws_is_a_json_error() {
    let p = Pipeline::new(ScriptedBackend::default());
    let router = app(&p);
    let resp = match tower::ServiceExt::oneshot(router, get("/ws")).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (status, content_type, body) = error_body(resp).await;
    assert_eq!(status, 400, "{body:?}");
    assert!(content_type.starts_with("application/json"));
    assert_eq!(body.error.code, "websocket_upgrade_required");

    let resp = match tower::ServiceExt::oneshot(app(&p), post_json("/ws", "{}")).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (status, _, body) = error_body(resp).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (405, "method_not_allowed")
    );
}
