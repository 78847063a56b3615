//! One answer through a real Azure Service Bus namespace, for users who have one.
//!
//! Set `CHATSTREAM_SERVICEBUS_CONNECTION_STRING` (and, when they differ from the defaults,
//! `SERVICEBUS_USER_MESSAGES_TOPIC`, `SERVICEBUS_USER_MESSAGES_SUBSCRIPTION`,
//! `SERVICEBUS_TOKEN_STREAMS_TOPIC`, `SERVICEBUS_TOKEN_STREAMS_SUBSCRIPTION`); the entities
//! must exist as the README describes. Without the variable the test skips with a line.

use std::sync::Arc;
use std::time::Duration;

use chatstream_core::{
    ChatRequest, ClientEvent, Gateway, ScriptedBackend, StreamEvent, StreamKey, Worker,
};
use chatstream_servicebus::{ServiceBusConfig, ServiceBusConnection, ServiceBusCredential};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_answer_through_azure() {
    let Ok(connection_string) = std::env::var("CHATSTREAM_SERVICEBUS_CONNECTION_STRING") else {
        eprintln!("skipping: CHATSTREAM_SERVICEBUS_CONNECTION_STRING is not set");
        return;
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut config = ServiceBusConfig::from_vars(|name| match name {
        "SERVICEBUS_CONNECTION_STRING" => Some(connection_string.clone()),
        other => var(other),
    })
    .expect("config");
    assert!(matches!(
        config.credential,
        ServiceBusCredential::ConnectionString(_)
    ));
    config.receive_wait = Duration::from_secs(1);
    let worker_side = ServiceBusConnection::connect(config.clone())
        .await
        .expect("connect (worker)");
    let gateway_side = ServiceBusConnection::connect(config)
        .await
        .expect("connect (gateway)");
    let backend = ScriptedBackend::default();
    let worker = Worker::builder(
        Arc::new(worker_side.request_source().await.expect("source")),
        Arc::new(worker_side.token_sink().await.expect("sink")),
        Arc::new(backend.clone()),
    )
    .build()
    .spawn();
    let gateway = Gateway::builder(
        Arc::new(gateway_side.request_sink().await.expect("request sink")),
        Arc::new(gateway_side.token_source()),
    )
    .build();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let request = ChatRequest::new(
        StreamKey::new(format!("s-{id}"), format!("m-{id}")),
        "Hello",
    );
    let events: Vec<ClientEvent> = tokio::time::timeout(Duration::from_secs(60), async {
        gateway
            .submit(request.clone())
            .await
            .expect("submit")
            .collect()
            .await
    })
    .await
    .expect("the answer within a minute");
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text } => Some(text.as_str()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(text, backend.answer(&request));
    worker.shutdown().await;
}
