//! Broker-facing traits: requests in, envelopes out, cancels across.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{ChatRequest, FinishReason, Result, StreamKey, TokenEnvelope};

/// A stream of envelopes of one [`StreamKey`], ending after `End`.
pub type EnvelopeStream = BoxStream<'static, Result<TokenEnvelope>>;

/// Settles one delivered request with the broker.
///
/// Dropping an acker without settling it must make the broker redeliver the request
/// (like a consumer whose connection closed), never lose it.
#[async_trait]
pub trait Acker: Send + Sync + Debug {
    /// The request is done: remove it from the broker.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Give it back; with `requeue` another worker gets it (with a higher attempt),
    /// without it is dropped (or dead-lettered where the broker routes rejects there).
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
    /// Move it to the dead-letter destination with a reason.
    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<()>;

    /// True once the broker has taken the delivery back from this worker — its channel or
    /// connection closed, so the broker redelivers it (to this worker after a reconnect, or
    /// to another). The worker then stops generating it: the answer would go out twice,
    /// and it could not be acked anyway. Checked at every publish and about once a second
    /// while a generation is quiet, so it must be cheap. Default: never.
    fn is_lost(&self) -> bool {
        false
    }
}

/// One request taken from a [`MessageSource`].
#[derive(Debug)]
pub struct Delivery {
    /// The decoded request, or why the message could not be decoded (the worker
    /// dead-letters it with that reason).
    pub request: Result<ChatRequest>,
    /// Delivery attempt, 1 on first delivery.
    pub attempt: u32,
    /// Settles the delivery.
    pub acker: Box<dyn Acker>,
}

/// Where requests come from.
#[async_trait]
pub trait MessageSource: Send + Sync + Debug + 'static {
    /// The next delivery, or `None` once the source is closed.
    async fn recv(&self) -> Result<Option<Delivery>>;
}

/// Where requests go.
#[async_trait]
pub trait RequestSink: Send + Sync + Debug + 'static {
    /// Queues a request; returns once the broker has accepted it.
    async fn submit(&self, request: &ChatRequest) -> Result<()>;
}

/// A [`RequestSink`] that takes no requests, for a gateway that only serves streams other
/// services submit — seed 001's SSE service reads `token-streams` and never publishes to
/// `user-messages`, so it needs no right to send there. Every submit fails with
/// [`Error::Unsupported`](crate::Error::Unsupported).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRequestSink;

#[async_trait]
impl RequestSink for NoRequestSink {
    async fn submit(&self, _request: &ChatRequest) -> Result<()> {
        Err(crate::Error::Unsupported(
            "this gateway only serves streams; requests are submitted elsewhere",
        ))
    }
}

/// An opaque publish destination chosen by a [`TokenSink`] for a request (a gateway's reply
/// queue, a topic, …). Envelopes for one destination are batched together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination(pub Arc<str>);

/// Where workers publish envelopes.
#[async_trait]
pub trait TokenSink: Send + Sync + Debug + 'static {
    /// The destination of the envelopes answering `request` (default: one for all).
    fn destination(&self, request: &ChatRequest) -> Destination {
        let _ = request;
        Destination::default()
    }

    /// Publishes a batch of envelopes (of any streams) bound for `destination`, in order.
    /// Returns once the broker has accepted all of them.
    async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()>;

    /// [`TokenSink::publish`] given the batch to keep: a sink that stores envelopes as they
    /// are (in process) takes them without a copy. The worker's batcher publishes this way.
    /// The default publishes a borrow of `batch`.
    async fn publish_owned(
        &self,
        destination: &Destination,
        batch: Vec<TokenEnvelope>,
    ) -> Result<()> {
        self.publish(destination, &batch).await
    }
}

/// What a [`TokenSource`] knows of one stream, for a stop or a resume to answer at once
/// instead of waiting (see [`TokenSource::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStatus {
    /// The source keeps no record of streams (live-only topologies): the stream may or may
    /// not exist.
    Untracked,
    /// No envelope of this stream is held: never published, or its retention expired.
    NotFound,
    /// Envelopes are held and no `End` yet: the stream is being generated.
    Open,
    /// The stream ended.
    Ended {
        /// How it ended.
        finish_reason: FinishReason,
    },
}

/// Where gateways read envelopes.
#[async_trait]
pub trait TokenSource: Send + Sync + Debug + 'static {
    /// What this source holds of `key`: [`StreamStatus::Untracked`] (the default) where it
    /// keeps no history. Cheap: one broker round trip at most.
    async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        let _ = key;
        Ok(StreamStatus::Untracked)
    }

    /// Subscribes to one stream. With `after_seq = None` the stream is read from its
    /// start where the broker keeps it, else from now; with `Some(n)` the envelopes after
    /// `n` are replayed first. Fails with [`Error::HistoryLost`](crate::Error::HistoryLost) when some of the asked-for
    /// history is gone, and [`Error::Unsupported`](crate::Error::Unsupported) where the broker keeps none.
    /// The returned stream ends after the `End` envelope; a subscription at or after the
    /// `End` of a finished stream yields that `End` again, so the subscriber learns the
    /// stream is over instead of waiting.
    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream>;

    /// Subscribes like [`TokenSource::subscribe`], but hands each envelope to `receiver` as
    /// it arrives instead of yielding a stream that a task must poll: the gateway's hubs
    /// subscribe this way. Same order, replay and errors as `subscribe`; a failure to
    /// subscribe is returned, a later one goes to [`EnvelopeReceiver::ended`]. Dropping the
    /// returned [`Subscription`] stops it.
    ///
    /// The default polls `subscribe`'s stream on a task of its own, so every source supports
    /// it. An in-process source calls the receiver from the publisher's own call instead,
    /// which saves that task and its wake-up for every envelope.
    async fn subscribe_into(
        &self,
        key: &StreamKey,
        after_seq: Option<u64>,
        receiver: Arc<dyn EnvelopeReceiver>,
    ) -> Result<Subscription> {
        let stream = self.subscribe(key, after_seq).await?;
        let task = tokio::spawn(pump(stream, receiver));
        Ok(Subscription::aborting(task.abort_handle()))
    }

    /// The address workers must publish to for this gateway (the reply-to topology), put
    /// into each submitted request's metadata. `None` where routing is by key alone.
    fn reply_address(&self) -> Option<String> {
        None
    }
}

/// Where a [`TokenSource::subscribe_into`] subscription hands its envelopes, in order.
///
/// Called without awaiting, from whatever task the source delivers on (for an in-process
/// source, the publisher's): an implementation must not block, and should do little more
/// than queue the envelope and wake whoever reads it.
pub trait EnvelopeReceiver: Send + Sync + Debug + 'static {
    /// The next envelope. Returns `false` when the receiver wants no more (it saw the
    /// `End`, or is gone): the source then drops the subscription.
    fn envelope(&self, env: Arc<TokenEnvelope>) -> bool;

    /// The subscription ended without an `End`: with the source's error, or `None` when
    /// the stream closed before its end. Nothing is delivered after it.
    fn ended(&self, error: Option<crate::Error>);
}

/// A live subscription made with [`TokenSource::subscribe_into`]; dropping it stops the
/// deliveries (at the latest after the one in progress).
pub struct Subscription {
    stop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    /// A subscription stopped by running `stop` (once) when dropped.
    pub fn on_drop(stop: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            stop: Some(Box::new(stop)),
        }
    }

    /// A subscription served by a task, aborted when dropped.
    pub fn aborting(task: tokio::task::AbortHandle) -> Self {
        Self::on_drop(move || task.abort())
    }
}

impl Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("live", &self.stop.is_some())
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// The default [`TokenSource::subscribe_into`]: `stream` polled into `receiver`.
async fn pump(mut stream: EnvelopeStream, receiver: Arc<dyn EnvelopeReceiver>) {
    use futures::StreamExt;
    while let Some(item) = stream.next().await {
        match item {
            Ok(env) => {
                if !receiver.envelope(Arc::new(env)) {
                    return;
                }
            }
            Err(e) => {
                receiver.ended(Some(e));
                return;
            }
        }
    }
    receiver.ended(None);
}

/// The control channel: gateways ask workers to stop generating a stream.
#[async_trait]
pub trait CancelChannel: Send + Sync + Debug + 'static {
    /// Asks every worker to stop generating `key`.
    async fn cancel(&self, key: &StreamKey) -> Result<()>;
    /// The cancels published from now on.
    async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>>;
}

/// News that a stream started in a session, across processes: seed 004's WebSocket clients
/// follow a whole channel (a session id) and learn of each answer on it from such news,
/// wherever the worker that answers it runs.
///
/// Workers [announce](SessionFeed::announce) every request they start answering
/// ([`WorkerBuilder::session_feed`](crate::worker::WorkerBuilder::session_feed)); gateways
/// read the [announcements](SessionFeed::announcements) and start following the streams of
/// the sessions their clients listen to. Like cancels, the news is a broadcast that keeps
/// nothing: a gateway that subscribes after an announcement misses it (its clients still
/// learn of the streams they submit themselves).
#[async_trait]
pub trait SessionFeed: Send + Sync + Debug + 'static {
    /// Tells every gateway that stream `key` starts.
    async fn announce(&self, key: &StreamKey) -> Result<()>;
    /// The streams announced from now on, by any worker; subscribed when this returns.
    async fn announcements(&self) -> Result<BoxStream<'static, StreamKey>>;
}

/// A message source as a trait object.
pub type DynMessageSource = dyn MessageSource;
/// A session feed as a trait object.
pub type DynSessionFeed = dyn SessionFeed;
/// A request sink as a trait object.
pub type DynRequestSink = dyn RequestSink;
/// A token sink as a trait object.
pub type DynTokenSink = dyn TokenSink;
/// A token source as a trait object.
pub type DynTokenSource = dyn TokenSource;
/// A cancel channel as a trait object.
pub type DynCancelChannel = dyn CancelChannel;

macro_rules! forward {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<T: MessageSource + ?Sized> MessageSource for $ptr<T> {
            async fn recv(&self) -> Result<Option<Delivery>> { (**self).recv().await }
        }
        #[async_trait]
        impl<T: RequestSink + ?Sized> RequestSink for $ptr<T> {
            async fn submit(&self, request: &ChatRequest) -> Result<()> { (**self).submit(request).await }
        }
        #[async_trait]
        impl<T: TokenSink + ?Sized> TokenSink for $ptr<T> {
            fn destination(&self, request: &ChatRequest) -> Destination { (**self).destination(request) }
            async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
                (**self).publish(destination, batch).await
            }
            async fn publish_owned(&self, destination: &Destination, batch: Vec<TokenEnvelope>) -> Result<()> {
                (**self).publish_owned(destination, batch).await
            }
        }
        #[async_trait]
        impl<T: TokenSource + ?Sized> TokenSource for $ptr<T> {
            async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
                (**self).subscribe(key, after_seq).await
            }
            async fn subscribe_into(
                &self,
                key: &StreamKey,
                after_seq: Option<u64>,
                receiver: Arc<dyn EnvelopeReceiver>,
            ) -> Result<Subscription> {
                (**self).subscribe_into(key, after_seq, receiver).await
            }
            fn reply_address(&self) -> Option<String> { (**self).reply_address() }
            async fn status(&self, key: &StreamKey) -> Result<StreamStatus> { (**self).status(key).await }
        }
        #[async_trait]
        impl<T: SessionFeed + ?Sized> SessionFeed for $ptr<T> {
            async fn announce(&self, key: &StreamKey) -> Result<()> { (**self).announce(key).await }
            async fn announcements(&self) -> Result<BoxStream<'static, StreamKey>> { (**self).announcements().await }
        }
        #[async_trait]
        impl<T: CancelChannel + ?Sized> CancelChannel for $ptr<T> {
            async fn cancel(&self, key: &StreamKey) -> Result<()> { (**self).cancel(key).await }
            async fn cancellations(&self) -> Result<BoxStream<'static, StreamKey>> { (**self).cancellations().await }
        }
    )*};
}
forward!(Arc, Box);
