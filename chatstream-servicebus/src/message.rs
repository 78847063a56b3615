//! Service Bus messages ⇄ chatstream values. Bodies are seed 000's JSON (requests) and the
//! canonical envelope JSON, so seed 000/001 peers read them unchanged.

use azservicebus::{ServiceBusMessage, ServiceBusReceivedMessage};
use chatstream_core::wire::seed000::{self, DecodedEnvelope, Mode};
use chatstream_core::{ChatRequest, Error, Result, StreamKey, TokenEnvelope};
use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Body};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};

use crate::error::ServiceBusError;

/// Application property carrying the chat session id.
pub const SESSION_ID_PROPERTY: &str = "sessionId";
/// Application property carrying the chat message id.
pub const MESSAGE_ID_PROPERTY: &str = "messageId";

const JSON: &str = "application/json";

fn with_key(body: String, key: &StreamKey) -> ServiceBusMessage {
    let mut message = ServiceBusMessage::new(body.into_bytes());
    message.set_content_type(JSON.to_owned());
    *message.application_properties_mut() = Some(
        ApplicationProperties::builder()
            .insert(
                SESSION_ID_PROPERTY,
                SimpleValue::String(key.session_id.to_string()),
            )
            .insert(
                MESSAGE_ID_PROPERTY,
                SimpleValue::String(key.message_id.to_string()),
            )
            .build(),
    );
    message
}

/// A request as a message: seed 000 JSON, the key in the application properties.
pub(crate) fn request_message(request: &ChatRequest) -> ServiceBusMessage {
    with_key(seed000::encode_request(request), &request.key)
}

/// An envelope as a message: canonical JSON, `SessionId` = chat session id (so the session
/// receiver of that chat gets it), the key in the application properties.
pub(crate) fn envelope_message(env: &TokenEnvelope) -> Result<ServiceBusMessage> {
    let body = seed000::encode_envelope(env, Mode::Canonical)
        .ok_or_else(|| Error::invalid("envelope", "not representable in the canonical format"))?;
    let mut message = with_key(body, &env.key);
    message
        .set_session_id(env.key.session_id.to_string())
        .map_err(|e| ServiceBusError::Invalid(format!("session id: {e}")))?;
    Ok(message)
}

/// The body's bytes: data sections concatenated, or a string/binary AMQP value (what some
/// clients send).
pub(crate) fn body_bytes(message: &ServiceBusReceivedMessage) -> Result<Vec<u8>> {
    match &message.raw_amqp_message().body {
        Body::Data(batch) => Ok(batch.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(AmqpValue(Value::String(s))) => Ok(s.as_bytes().to_vec()),
        Body::Value(AmqpValue(Value::Binary(b))) => Ok(b.to_vec()),
        _ => Err(Error::decode(
            "Service Bus message",
            "the body is neither data nor a string",
        )),
    }
}

/// The request in a received message.
pub(crate) fn decode_request(message: &ServiceBusReceivedMessage) -> Result<ChatRequest> {
    seed000::decode_request(&body_bytes(message)?)
}

/// The envelope in a received message.
pub(crate) fn decode_envelope(message: &ServiceBusReceivedMessage) -> Result<DecodedEnvelope> {
    seed000::decode_envelope(&body_bytes(message)?)
}
