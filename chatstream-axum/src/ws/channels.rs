//! The channel directory: which channels WebSocket clients listen to, and the news that a
//! stream started on one of them.
//!
//! The gateway follows streams by [`StreamKey`]; a seed 004 client subscribes to a whole
//! channel (a session id) and must learn the message ids answered on it. Whoever learns of
//! a new stream [announces](Channels::announce) it here: the `/ws` route does for the
//! requests its clients send, and [`Channels::announcing`] wraps a worker's
//! [`MessageSource`] so that every request that worker takes is announced too — requests
//! published straight to the broker included. That covers every deployment where the
//! gateway and the workers share a process (the in-memory broker). Across processes the
//! broker carries the news: workers announce on a [`SessionFeed`](chatstream_core::SessionFeed)
//! and the directory [follows](Channels::follow) it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use chatstream_core::{Delivery, DynSessionFeed, MessageSource, Result, StreamKey};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Announcements a listener of one channel may fall behind before it is told it missed
/// some (new streams of one channel are rare: one per question).
const FEED_CAPACITY: usize = 64;

type Senders = HashMap<Arc<str>, broadcast::Sender<StreamKey>>;

/// Which channels (session ids) WebSocket clients listen to. Cheap to clone; clones share
/// the directory. Only channels with a listener take memory.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    senders: Arc<Mutex<Senders>>,
}

impl Channels {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the clients subscribed to `key.session_id` that the stream `key` exists. A
    /// client already following it ignores the news.
    pub fn announce(&self, key: &StreamKey) {
        let senders = self.lock();
        if let Some(tx) = senders.get(&*key.session_id) {
            // No receiver left only means the last listener is leaving right now.
            let _ = tx.send(key.clone());
        }
    }

    /// Channels with at least one listener.
    pub fn listened(&self) -> usize {
        self.lock().len()
    }

    /// Follows `feed`, announcing here every stream announced there — by workers in any
    /// process ([`WorkerBuilder::session_feed`](chatstream_core::worker::WorkerBuilder::session_feed)),
    /// so that clients of this gateway learn of answers to requests published straight to
    /// the broker and answered elsewhere. Subscribed when this returns; follows until this
    /// directory (every clone of it) is dropped. News of channels nobody listens to here is
    /// dropped at once.
    pub async fn follow(&self, feed: &DynSessionFeed) -> Result<()> {
        let mut news = feed.announcements().await?;
        let senders = Arc::downgrade(&self.senders);
        tokio::spawn(async move {
            while let Some(key) = news.next().await {
                let Some(senders) = senders.upgrade() else {
                    return;
                };
                Channels { senders }.announce(&key);
            }
            tracing::warn!(
                "the session feed ended; streams started elsewhere are no longer announced"
            );
        });
        Ok(())
    }

    /// Wraps `source` (a worker's request source) so that every request taken from it is
    /// announced before the worker starts answering.
    pub fn announcing<S: MessageSource>(&self, source: S) -> AnnouncingSource<S> {
        AnnouncingSource {
            inner: source,
            channels: self.clone(),
        }
    }

    /// Starts listening to `channel`.
    pub(crate) fn listen(&self, channel: Arc<str>) -> ChannelFeed {
        let mut senders = self.lock();
        let rx = senders
            .entry(channel.clone())
            .or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe();
        ChannelFeed {
            rx: BroadcastStream::new(rx),
            channel,
            channels: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Senders> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a listener of a channel receives: a new stream, or how many it missed.
pub(crate) type Announcement = std::result::Result<StreamKey, u64>;

/// The announcements of one channel for one listener; leaving (dropping it) removes the
/// channel from the directory when it was the last listener.
pub(crate) struct ChannelFeed {
    rx: BroadcastStream<StreamKey>,
    channel: Arc<str>,
    channels: Channels,
}

impl std::fmt::Debug for ChannelFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelFeed")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Stream for ChannelFeed {
    type Item = Announcement;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Announcement>> {
        Pin::new(&mut self.rx)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(n)| n)))
    }
}

impl Drop for ChannelFeed {
    fn drop(&mut self) {
        let mut senders = self.channels.lock();
        // Our receiver is still alive here: one receiver left means it is ours. Holding the
        // lock keeps a concurrent `listen` from slipping in between.
        if senders
            .get(&self.channel)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            senders.remove(&self.channel);
        }
    }
}

/// A [`MessageSource`] that [announces](Channels::announce) the stream of every request it
/// hands out. Made by [`Channels::announcing`].
#[derive(Debug)]
pub struct AnnouncingSource<S> {
    inner: S,
    channels: Channels,
}

#[async_trait]
impl<S: MessageSource> MessageSource for AnnouncingSource<S> {
    async fn recv(&self) -> Result<Option<Delivery>> {
        let delivery = self.inner.recv().await?;
        if let Some(Delivery {
            request: Ok(request),
            ..
        }) = &delivery
        {
            self.channels.announce(&request.key);
        }
        Ok(delivery)
    }
}

/// Streams a connection remembers having followed, so an announcement that comes twice
/// (from the route and from the worker) does not replay an answer.
const SEEN_CAPACITY: usize = 1024;

/// A set of stream keys remembering the most recent [`SEEN_CAPACITY`].
#[derive(Debug, Default)]
pub(crate) struct Seen {
    set: HashSet<StreamKey>,
    order: VecDeque<StreamKey>,
}

impl Seen {
    pub(crate) fn contains(&self, key: &StreamKey) -> bool {
        self.set.contains(key)
    }

    /// The newest answer seen whose message id is `message_id`.
    pub(crate) fn find_message(&self, message_id: &str) -> Option<StreamKey> {
        self.order
            .iter()
            .rev()
            .find(|k| &*k.message_id == message_id)
            .cloned()
    }

    /// `false` when it was there already.
    pub(crate) fn insert(&mut self, key: StreamKey) -> bool {
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn news_from_a_session_feed_reaches_the_listeners_of_its_channel() {
        use chatstream_core::{InMemoryBroker, SessionFeed};

        let broker = InMemoryBroker::new();
        let channels = Channels::new();
        channels.follow(&broker).await.expect("follow");
        let mut a = channels.listen(Arc::from("a"));
        // A worker elsewhere announces two streams; only channel a's reaches a.
        broker
            .announce(&StreamKey::new("b", "1"))
            .await
            .expect("announce");
        broker
            .announce(&StreamKey::new("a", "2"))
            .await
            .expect("announce");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), a.next()).await;
        assert_eq!(got.ok().flatten(), Some(Ok(StreamKey::new("a", "2"))));
    }

    #[tokio::test]
    async fn listeners_get_their_channel_only_and_leave_no_trace() {
        let channels = Channels::new();
        let mut a = channels.listen(Arc::from("a"));
        let b = channels.listen(Arc::from("b"));
        assert_eq!(channels.listened(), 2);
        channels.announce(&StreamKey::new("b", "1"));
        channels.announce(&StreamKey::new("a", "2"));
        assert_eq!(a.next().await, Some(Ok(StreamKey::new("a", "2"))));
        drop(b);
        assert_eq!(channels.listened(), 1);
        let a2 = channels.listen(Arc::from("a"));
        drop(a);
        assert_eq!(channels.listened(), 1, "a still has a listener");
        drop(a2);
        assert_eq!(channels.listened(), 0);
    }
}
