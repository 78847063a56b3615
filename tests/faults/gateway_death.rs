//! Gateway death: a gateway process is SIGKILLed while its clients stream; they reconnect
//! to another gateway with `Last-Event-ID` and get exactly the rest of the answer, on the
//! Redis bus and on RabbitMQ's stream topology (both keep the stream's history). After the
//! end, a read from the start on the surviving gateway gets the whole answer.

use crate::common::*;
use chatstream::{ChatRequest, StreamKey};

/// A client of gateway A: its stream path, the answer it expects, what it has read.
struct Client {
    path: String,
    want: String,
    text: String,
    last_id: String,
}

async fn kill_gateway_mid_stream(kind: Kind) {
    if !broker_up(kind).await {
        return;
    }
    let ns = namespace(&format!("gwdeath-{}", kind.env()));
    let name = ns.name.clone();
    let _cleanup = (kind == Kind::Redis).then(|| RedisCleanup(redis_prefix(&name)));
    let _worker = Spec {
        token_delay_ms: 60,
        ..Spec::worker(kind, &name)
    }
    .start()
    .await;
    let a = Spec::gateway(kind, &name).start().await;
    let b = Spec::gateway(kind, &name).start().await;
    let (port_a, port_b) = (a.port.unwrap_or_default(), b.port.unwrap_or_default());

    let mut clients = Vec::new();
    for i in 0..4 {
        let text = format!("question {i}");
        let submitted = submit(port_a, &text).await;
        let session = submitted["sessionId"].as_str().unwrap_or_default();
        let message = submitted["messageId"].as_str().unwrap_or_default();
        let request = ChatRequest::new(StreamKey::new(session, message), text);
        let path = submitted["stream"].as_str().unwrap_or_default().to_owned();
        let mut sse = SseClient::get(port_a, &path, None).await;
        assert_eq!(sse.status, 200);
        let mut client = Client {
            path,
            want: expected(&request),
            text: String::new(),
            last_id: String::new(),
        };
        // Read three tokens from gateway A.
        while client.text.split_whitespace().count() < 3 {
            let event = within("a token from gateway A", STEP, sse.next()).await;
            let event = event.unwrap_or_else(|| panic!("gateway A closed early"));
            if let Some(token) = token_of(&event.data) {
                client.text.push_str(&token);
                client.last_id = event.id.unwrap_or_default();
            }
        }
        clients.push((client, sse));
    }
    a.kill().await;

    for (mut client, mut old) in clients {
        // The old connection ends (reset by the kernel), it does not hang.
        while within("the dead gateway's stream to close", STEP, old.next())
            .await
            .is_some()
        {}
        let mut sse = SseClient::get(port_b, &client.path, Some(&client.last_id)).await;
        assert_eq!(sse.status, 200);
        let mut rest = Vec::new();
        while let Some(event) = within("gateway B's stream", STEP, sse.next()).await {
            rest.push(event.data);
        }
        assert_eq!(rest.last().map(String::as_str), Some("__END__"), "{rest:?}");
        for data in &rest[..rest.len() - 1] {
            let token = token_of(data).unwrap_or_else(|| panic!("not a token: {data}"));
            client.text.push_str(&token);
        }
        assert_eq!(client.text, client.want, "resumed answer");

        // After the end, the whole answer again from the start.
        let mut again = SseClient::get(port_b, &client.path, None).await;
        assert_eq!(again.status, 200);
        let mut whole = String::new();
        while let Some(event) = within("the whole answer again", STEP, again.next()).await {
            if let Some(token) = token_of(&event.data) {
                whole.push_str(&token);
            }
        }
        assert_eq!(whole, client.want, "a read from the start after the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_another_with_redis_history() {
    kill_gateway_mid_stream(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_another_with_the_rabbitmq_stream() {
    kill_gateway_mid_stream(Kind::Amqp).await;
}
