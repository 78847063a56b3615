//! What the `assistant_ws` end-to-end tests share: a per-test setup (RabbitMQ names, Redis
//! prefix, fake model), the example process, a seed 004 WebSocket client, a seed 001 SSE
//! reader and a fake OpenWeather.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstream_core::testkit::fake_openai::{Behaviour, FakeOpenAi};
use chatstream_core::testkit::skip_or_fail;
use chatstream_core::wire::seed004::{parse_message, WsMessage};
use chatstream_redis::testkit::{connect_or_skip, redis_url, PrefixGuard};
use chatstream_redis::RedisClient;
use futures::{SinkExt, StreamExt};
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{amqp_url, block_on_aside, example_path, port_after, start, within};

/// Longest any single wait may take before the test fails as hung.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Seconds a thread lives after its last use, in these tests.
pub(crate) const EXPIRY: u64 = 100_000;

/// One test's world: its own exchange, routing key and queue, its own Redis prefix, its
/// fake model. Deletes the queue, the exchange and the prefix's keys when dropped.
pub(crate) struct Setup {
    pub(crate) fake: FakeOpenAi,
    pub(crate) redis: RedisClient,
    amqp: Connection,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) queue: String,
    /// Extra environment for the example (the weather tool's).
    pub(crate) extra_env: Vec<(String, String)>,
    _keys: PrefixGuard,
}

impl Setup {
    /// Connects to both servers, or skips (`None`).
    pub(crate) async fn new(behaviour: Behaviour) -> Option<Self> {
        let redis = connect_or_skip("aws").await?;
        let url = amqp_url();
        let amqp = match Connection::connect(&url, Default::default()).await {
            Ok(c) => c,
            Err(e) => return skip_or_fail("RabbitMQ", format!("{url}: {e}")),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..12];
        Some(Self {
            fake: FakeOpenAi::start(behaviour).await,
            _keys: PrefixGuard::new(&redis),
            redis,
            amqp,
            exchange: format!("cstest.aws.{id}.exchange"),
            routing_key: format!("cstest.aws.{id}.key"),
            queue: format!("cstest.aws.{id}.queue"),
            extra_env: Vec::new(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        self.redis.keys().prefix()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(example_path("assistant_ws"));
        cmd.args(args)
            .env("RABBITMQ_URL", amqp_url())
            .env_remove("CHATSTREAM_AMQP_URL")
            .env("EXCHANGE_NAME", &self.exchange)
            .env("ROUTING_KEY", &self.routing_key)
            .env("QUEUE_NAME", &self.queue)
            .env("RABBITMQ_TOKEN_STREAM", format!("{}.log", self.queue))
            .env("REDIS_URL", redis_url())
            .env("REDIS_PREFIX", self.prefix())
            .env("REDIS_THREAD_EXPIRY", EXPIRY.to_string())
            .env("OPENAI_URL", self.fake.base_url())
            .env("OPENAI_API_KEY", "sk-test")
            .env("OPENAI_MODEL", "gpt-4o-mini")
            .env_remove("OPENWEATHER_API_KEY")
            .env_remove("OPENWEATHER_URL")
            .env("WEBSOCKET_URL", "ws://127.0.0.1:0/ws")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the service (`args` = `[]` or `["--gateway-only"]`); returns once it listens
    /// (and, with a worker, consumes the request queue).
    pub(crate) async fn start(&self, args: &[&str]) -> Service {
        let what = format!("assistant_ws {args:?}");
        let started = start(self.command(args), &what, WAIT, |line| {
            port_after(line, "WebSocket at ws://127.0.0.1:")
        })
        .await;
        Service {
            _child: started.child,
            port: started.ready,
        }
    }

    /// Runs a command of the example to its end.
    pub(crate) async fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn assistant_ws {args:?}: {e}"));
        within("the command to finish", WAIT, child.wait_with_output())
            .await
            .unwrap_or_else(|e| panic!("assistant_ws {args:?}: {e}"))
    }

    /// Publishes a request as seed 004's clients do: JSON to the exchange with the routing
    /// key.
    pub(crate) async fn publish(&self, channel: &str, message_id: &str, message: &str) {
        let body = serde_json::json!({
            "channel": channel, "message_id": message_id, "message": message
        })
        .to_string();
        let ch = self.amqp.create_channel().await.expect("channel");
        ch.basic_publish(
            self.exchange.as_str().into(),
            self.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirmed");
    }

    /// A Redis command on the test's server.
    pub(crate) async fn redis<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query_async(&mut self.redis.connection())
            .await
            .unwrap_or_else(|e| panic!("redis: {e}"))
    }

    /// The thread a channel maps to.
    pub(crate) async fn thread_of(&self, channel: &str) -> Option<String> {
        self.redis(redis::cmd("GET").arg(self.redis.keys().channel(channel)))
            .await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let (url, queue, exchange) = (amqp_url(), self.queue.clone(), self.exchange.clone());
        block_on_aside(async move {
            let conn = Connection::connect(&url, Default::default()).await.ok()?;
            let ch = conn.create_channel().await.ok()?;
            for q in [queue.clone(), format!("{queue}.log")] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = ch
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
            let _ = conn.close(200, "bye".into()).await;
            Some(())
        });
    }
}

/// A running example process, killed when dropped.
pub(crate) struct Service {
    _child: Child,
    pub(crate) port: u16,
}

/// A seed 004 browser: one WebSocket.
pub(crate) struct Browser {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl Browser {
    pub(crate) async fn connect(service: &Service) -> Self {
        let url = format!("ws://127.0.0.1:{}/ws", service.port);
        let (ws, _) = within(
            "WebSocket handshake",
            WAIT,
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap_or_else(|e| panic!("WebSocket: {e}"));
        Self { ws }
    }

    pub(crate) async fn send(&mut self, json: serde_json::Value) {
        self.ws
            .send(Message::text(json.to_string()))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Subscribes to `channel` and returns once the server has the subscription in place
    /// (actions are handled in order: the pong comes after it).
    pub(crate) async fn subscribe(&mut self, channel: &str) {
        self.send(serde_json::json!({"action": "subscribe", "channel": channel}))
            .await;
        self.send(serde_json::json!({"action": "ping"})).await;
        within("pong", WAIT, async {
            loop {
                if self.next().await.status == "pong" {
                    return;
                }
            }
        })
        .await;
    }

    /// The next seed 004 message.
    pub(crate) async fn next(&mut self) -> WsMessage {
        loop {
            let msg = within("a WebSocket message", WAIT, self.ws.next())
                .await
                .unwrap_or_else(|| panic!("WebSocket closed"))
                .unwrap_or_else(|e| panic!("WebSocket: {e}"));
            if let Message::Text(text) = msg {
                return parse_message(text.as_str())
                    .unwrap_or_else(|e| panic!("{e}: {}", text.as_str()));
            }
        }
    }

    /// Every message of `message_id`'s answer, up to its final one (or an error).
    pub(crate) async fn answer(&mut self, message_id: &str) -> Vec<WsMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            if m.message_id != message_id {
                continue;
            }
            let last = m.final_message == Some(true) || m.kind == "error";
            out.push(m);
            if last {
                return out;
            }
        }
    }
}

/// The concatenated `in_progress` chunks of an answer.
pub(crate) fn streamed_text(answer: &[WsMessage]) -> String {
    answer
        .iter()
        .filter(|m| m.status == "in_progress")
        .map(|m| m.message.as_str())
        .collect()
}

/// One SSE event of the seed 001 route: its `id:` and `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) id: String,
    pub(crate) data: String,
}

/// A seed 001 SSE stream read event by event (HTTP/1.0, so the body is close-delimited).
pub(crate) struct Sse {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Sse {
    pub(crate) async fn open(
        port: u16,
        channel: &str,
        message_id: &str,
        last: Option<&str>,
    ) -> Self {
        let mut s = within("connect", WAIT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let head =
            format!("GET /api/stream/{channel}/{message_id} HTTP/1.0\r\nHost: t\r\n{resume}\r\n");
        s.write_all(head.as_bytes()).await.expect("write");
        let mut lines = BufReader::new(s).lines();
        let status = within("status line", WAIT, lines.next_line())
            .await
            .expect("read")
            .unwrap_or_default();
        assert!(status.contains(" 200 "), "{status}");
        while let Some(line) = within("headers", WAIT, lines.next_line())
            .await
            .expect("read")
        {
            if line.is_empty() {
                break;
            }
        }
        Self { lines }
    }

    /// The next event, `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        let (mut id, mut data) = (String::new(), None::<String>);
        loop {
            let line = within("an SSE line", WAIT, self.lines.next_line())
                .await
                .expect("read")?;
            if line.is_empty() {
                if let Some(data) = data.take() {
                    return Some(SseEvent { id, data });
                }
                continue; // after a keep-alive comment
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_owned());
            }
        }
    }

    /// The events up to and including `data: __END__`.
    pub(crate) async fn rest(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let end = e.data == "__END__";
            out.push(e);
            if end {
                break;
            }
        }
        out
    }
}

/// A fake OpenWeather answering every request with Paris's weather; returns its base URL
/// and the request lines it saw.
pub(crate) async fn fake_weather() -> (String, Arc<Mutex<Vec<String>>>) {
    const PARIS: &str = r#"{"weather":[{"description":"clear sky"}],"main":{"temp":21.5,"feels_like":20.9,"humidity":48},"wind":{"speed":3.6},"sys":{"country":"FR"},"name":"Paris"}"#;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PARIS}",
                PARIS.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (base, seen)
}
