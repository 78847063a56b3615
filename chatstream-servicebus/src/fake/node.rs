//! The request/response nodes: `$cbs` (put-token) and `<entity>/$management` (lock renewal).
//!
//! A client attaches a sender (requests) and a receiver (replies) to the node; each request
//! names its reply address in `reply-to` and gets one reply whose `correlation-id` is the
//! request's `message-id`, with `status-code` in the application properties.

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::Delivery;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};
use tokio::sync::mpsc;

use super::amqp::now_ms;
use super::broker::AmqpMessage;
use super::server::ReplyRoutes;
use super::LOCK_DURATION_MS;

/// A reply on its way to a client's reply link.
pub(crate) type Reply = AmqpMessage;

/// Registers the client's reply link under its address and forwards replies to it.
pub(crate) fn attach_replies(mut sender: Sender, routes: &ReplyRoutes) {
    let address = sender
        .target()
        .as_ref()
        .and_then(|t| t.address.clone())
        .unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(address.clone(), tx);
    let routes = routes.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                reply = rx.recv() => match reply {
                    // Replies are settled by the client; the outcome is of no interest.
                    Some(reply) => if sender.send_batchable(reply).await.is_err() { break },
                    None => break,
                },
                _ = sender.on_detach() => break,
            }
        }
        routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&address);
    });
}

/// Reads requests from a client's request link and answers each on its reply link.
pub(crate) async fn serve_requests(mut receiver: Receiver, routes: ReplyRoutes) {
    loop {
        let delivery: Delivery<Body<Value>> = match receiver.recv().await {
            Ok(d) => d,
            Err(_) => break,
        };
        tokio::time::sleep(super::SETTLE_DELAY).await;
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        let request = delivery.into_message();
        let reply_to = request
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.clone())
            .unwrap_or_default();
        let reply = answer(&request);
        let route = routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&reply_to)
            .cloned();
        match route {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => tracing::debug!(%reply_to, "fake Service Bus: no reply link"),
        }
    }
}

fn operation(request: &AmqpMessage) -> String {
    match request
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get("operation"))
    {
        Some(SimpleValue::String(s)) => s.clone(),
        Some(SimpleValue::Symbol(s)) => s.to_string(),
        _ => String::new(),
    }
}

/// The body's map entry `key`, when the body is an AMQP value map.
fn body_entry<'a>(request: &'a AmqpMessage, key: &str) -> Option<&'a Value> {
    match &request.body {
        Body::Value(AmqpValue(Value::Map(map))) => map.get(&Value::String(key.to_owned())),
        _ => None,
    }
}

fn answer(request: &AmqpMessage) -> Reply {
    let until = Value::Timestamp(Timestamp::from_milliseconds(now_ms() + LOCK_DURATION_MS));
    let (status, body) = match operation(request).as_str() {
        "put-token" => (202, Value::Null),
        "com.microsoft:renew-lock" => {
            let n = match body_entry(request, "lock-tokens") {
                Some(Value::Array(tokens)) => tokens.0.len(),
                _ => 0,
            };
            let expirations = Value::Array(Array(vec![until; n]));
            (200, map([("expirations", expirations)]))
        }
        "com.microsoft:renew-session-lock" => (200, map([("expiration", until)])),
        _ => (501, Value::Null),
    };
    let correlation_id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    reply(status, correlation_id, body)
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(m)
}

fn reply(status: i32, correlation_id: Option<MessageId>, body: Value) -> Reply {
    let description = match status {
        200 => "OK",
        202 => "Accepted",
        _ => "operation not implemented by the fake Service Bus",
    };
    Message::builder()
        .properties(Properties {
            correlation_id,
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert(
                    "status-description",
                    SimpleValue::String(description.into()),
                )
                .build(),
        )
        .body(Body::Value(AmqpValue(body)))
        .build()
}
