//! The pluggable traits. All are object safe so a deployment can pick adapters at run time.

mod broker;
mod llm;
mod store;
mod transport;

pub use broker::{
    Acker, CancelChannel, Delivery, Destination, DynCancelChannel, DynMessageSource,
    DynRequestSink, DynTokenSink, DynTokenSource, EnvelopeStream, MessageSource, RequestSink,
    TokenSink, TokenSource,
};
pub use llm::{DynLlmBackend, LlmBackend, LlmEvent, LlmLayer, LlmStream, ToolCall};
pub use store::{
    Conversation, ConversationMeta, ConversationStore, DynConversationStore, StoreStats,
};
pub use transport::{ClientEvent, ClientTransport, DynClientTransport, Fault, Frame, FrameEncoder};

#[cfg(test)]
mod tests {
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
    ) {
    }
}
