//! The pluggable traits. All are object safe so a deployment can pick adapters at run time.

mod broker;
mod health;
mod llm;
mod registry;
mod responses;
mod store;
mod transport;

pub use broker::{
    Acker, CancelChannel, Delivery, Destination, DynCancelChannel, DynMessageSource,
    DynRequestSink, DynSessionFeed, DynTokenSink, DynTokenSource, EnvelopeReceiver, EnvelopeStream,
    MessageSource, NoRequestSink, RequestSink, SessionFeed, StreamStatus, Subscription, TokenSink,
    TokenSource,
};
pub use health::{DynHealthCheck, HealthCheck};
pub use llm::{DynLlmBackend, LlmBackend, LlmEvent, LlmLayer, LlmStream, ToolCall};
pub use registry::{DynStreamRegistry, StreamRecord, StreamRegistry};
pub use responses::{
    DynResponseStore, ResponseHeader, ResponseOutcome, ResponseRecord, ResponseStatus,
    ResponseStore,
};
pub use store::{
    Conversation, ConversationMeta, ConversationStore, DynConversationStore, StoreStats,
};
pub use transport::{ClientEvent, ClientTransport, DynClientTransport, Fault, Frame, FrameEncoder};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    // Object safety, proven at compile time.
    fn _obj_safe(
        _: Box<dyn MessageSource>,
        _: Box<dyn TokenSink>,
        _: Box<dyn TokenSource>,
        _: Box<dyn RequestSink>,
        _: Box<dyn CancelChannel>,
        _: Box<dyn LlmBackend>,
        _: Box<dyn ClientTransport>,
        _: Box<dyn ConversationStore>,
        _: Box<dyn Acker>,
        _: Box<dyn FrameEncoder>,
        _: Box<dyn StreamRegistry>,
        _: Box<dyn HealthCheck>,
    ) {
    }

    #[tokio::test]
    async fn a_read_only_gateway_refuses_submits_and_still_serves_streams() {
        use crate::{ChatRequest, Error, Gateway, InMemoryBroker, StreamEvent, StreamKey};
        use futures::StreamExt;

        let broker = InMemoryBroker::new();
        let gateway = Gateway::builder(Arc::new(NoRequestSink), Arc::new(broker.clone())).build();
        let key = StreamKey::new("s", "m");
        let err = gateway
            .submit(ChatRequest::new(key.clone(), "hi"))
            .await
            .expect_err("a read-only gateway takes no requests");
        assert!(matches!(err, Error::Unsupported(_)), "{err}");

        // Streams published by workers elsewhere still reach its clients.
        let mut events = gateway.subscribe(&key, None).await.expect("subscribe");
        let sink: &dyn TokenSink = &broker;
        let env = |seq, event| crate::TokenEnvelope::new(key.clone(), 1, seq, event);
        let end = StreamEvent::End {
            finish_reason: crate::FinishReason::Stop,
            usage: None,
        };
        sink.publish(
            &Destination::default(),
            &[env(0, StreamEvent::token("hello")), env(1, end)],
        )
        .await
        .expect("publish");
        let mut got = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                ClientEvent::Envelope(e) => got.push(e.event.clone()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], StreamEvent::token("hello"));
        assert!(got[1].is_end(), "{got:?}");
    }
}
