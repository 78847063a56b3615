//! Small AMQP helpers of the fake: addresses, bodies, time.

use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;

/// `amqp://host:port/path` → `path`; anything without a scheme is returned as is.
pub(crate) fn strip_authority(address: &str) -> &str {
    match address.find("://") {
        Some(i) => {
            let rest = &address[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => address,
    }
}

/// The bytes of a body: data sections concatenated, a string or binary value as is.
pub(crate) fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Binary(b) => b.to_vec(),
            other => format!("{other:?}").into_bytes(),
        },
        Body::Sequence(_) | Body::Empty => Vec::new(),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
