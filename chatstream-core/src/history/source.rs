//! The gateway's side: live from the primary broker, the rest from the log.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::{
    DynTokenSource, EnvelopeStream, Error, Result, StreamKey, StreamStatus, TokenEnvelope,
    TokenSource,
};

/// Envelopes of the primary a subscription holds back while it catches up from the log; past
/// this the primary is dropped and the log alone serves the stream (it is live too). As many
/// as a gateway hub keeps by default.
pub const MAX_HELD: usize = 4096;

/// A [`TokenSource`] that reads live envelopes from a primary broker and what the primary
/// does not hold from a history log (see the [module docs](crate::history) for the ordering
/// and failure rules).
///
/// [`status`](TokenSource::status) is the log's, or the primary's where the log keeps no
/// record ([`StreamStatus::Untracked`]); [`reply_address`](TokenSource::reply_address) is the
/// primary's, so workers keep routing answers to this gateway's reply queue.
#[derive(Debug, Clone)]
pub struct FallbackTokenSource {
    primary: Arc<DynTokenSource>,
    log: Arc<DynTokenSource>,
}

impl FallbackTokenSource {
    /// Reads live from `primary`, and from `log` what `primary` does not hold.
    pub fn new(primary: Arc<DynTokenSource>, log: Arc<DynTokenSource>) -> Self {
        Self { primary, log }
    }

    /// The primary's subscription from now (or after `after_seq` where it keeps history), or
    /// `None` when it cannot give one: the log then serves the stream alone.
    async fn subscribe_primary(
        &self,
        key: &StreamKey,
        after_seq: Option<u64>,
    ) -> Option<EnvelopeStream> {
        let mut subscribed = self.primary.subscribe(key, after_seq).await;
        if after_seq.is_some()
            && matches!(
                subscribed,
                Err(Error::Unsupported(_) | Error::HistoryLost { .. })
            )
        {
            // A live-only broker: live from now, the log gives what came before.
            subscribed = self.primary.subscribe(key, None).await;
        }
        match subscribed {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(stream = %key, error = %e, "primary subscription failed; reading the history log alone");
                None
            }
        }
    }
}

#[async_trait]
impl TokenSource for FallbackTokenSource {
    async fn status(&self, key: &StreamKey) -> Result<StreamStatus> {
        match self.log.status(key).await? {
            StreamStatus::Untracked => self.primary.status(key).await,
            known => Ok(known),
        }
    }

    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        // The primary first: whatever it misses was published before, so the log has it.
        let primary = self.subscribe_primary(key, after_seq).await;
        let log = self.log.subscribe(key, after_seq).await?;
        let merge = Merge {
            key: key.clone(),
            log_source: self.log.clone(),
            log: Some(log),
            primary,
            held: VecDeque::new(),
            cursor: after_seq,
            delivered: false,
            live: false,
            done: false,
        };
        Ok(futures::stream::unfold(merge, Merge::next).boxed())
    }

    fn reply_address(&self) -> Option<String> {
        self.primary.reply_address()
    }
}

/// Whether `env` continues a subscription whose last envelope had `seq = cursor`: it is the
/// next one, or the first of an attempt (a reset, which needs nothing before it).
fn continues(cursor: Option<u64>, env: &TokenEnvelope) -> bool {
    env.seq == TokenEnvelope::seq_base(env.attempt)
        || cursor.and_then(|c| c.checked_add(1)) == Some(env.seq)
}

/// One subscription: the log until the primary's held-back envelopes continue what was
/// forwarded, then the primary.
struct Merge {
    key: StreamKey,
    log_source: Arc<DynTokenSource>,
    log: Option<EnvelopeStream>,
    primary: Option<EnvelopeStream>,
    /// The primary's envelopes after `cursor`, in arrival order, while the log catches up.
    held: VecDeque<TokenEnvelope>,
    /// The `seq` of the last envelope forwarded (at first: the subscription's `after_seq`).
    cursor: Option<u64>,
    /// Whether anything was forwarded yet.
    delivered: bool,
    /// Handed over: the primary alone serves the stream.
    live: bool,
    done: bool,
}

enum Next {
    Log(Option<Result<TokenEnvelope>>),
    Primary(Option<Result<TokenEnvelope>>),
}

impl Merge {
    async fn next(mut self) -> Option<(Result<TokenEnvelope>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if self.live {
                let item = match self.held.pop_front() {
                    Some(env) => Some(Ok(env)),
                    None => match self.primary.as_mut() {
                        Some(primary) => primary.next().await,
                        None => None,
                    },
                };
                match item {
                    Some(Ok(env)) if self.is_duplicate(&env) => continue,
                    Some(Ok(env)) => return Some(self.forward(env)),
                    Some(Err(e)) => {
                        let why = e.to_string();
                        if let Err(e) = self.fall_back(&why).await {
                            return Some(self.fail(e));
                        }
                    }
                    None => {
                        if let Err(e) = self.fall_back("closed before the end").await {
                            return Some(self.fail(e));
                        }
                    }
                }
                continue;
            }
            if self.hand_over() {
                continue;
            }
            let Some(log) = self.log.as_mut() else {
                return None; // not reached: without the primary the log is kept
            };
            let next = match self.primary.as_mut() {
                Some(primary) => tokio::select! {
                    biased;
                    item = log.next() => Next::Log(item),
                    item = primary.next() => Next::Primary(item),
                },
                None => Next::Log(log.next().await),
            };
            match next {
                Next::Log(Some(Ok(env))) if self.is_duplicate(&env) => {}
                Next::Log(Some(Ok(env))) => return Some(self.forward(env)),
                Next::Log(Some(Err(e))) => return Some(self.fail(e)),
                Next::Log(None) => {
                    let closed = Error::unavailable(
                        "history log",
                        "its subscription closed before the stream's end",
                    );
                    return Some(self.fail(closed));
                }
                Next::Primary(Some(Ok(env))) => {
                    if !self.is_duplicate(&env) {
                        self.held.push_back(env);
                    }
                    if self.held.len() > MAX_HELD {
                        tracing::debug!(stream = %self.key, "the primary ran too far ahead; reading the history log alone");
                        self.drop_primary();
                    }
                }
                Next::Primary(Some(Err(e))) => {
                    tracing::debug!(stream = %self.key, error = %e, "primary subscription failed; reading the history log alone");
                    self.drop_primary();
                }
                Next::Primary(None) => self.drop_primary(),
            }
        }
    }

    /// Already forwarded (or of a superseded attempt). The `End` of a finished stream is the
    /// exception while nothing was forwarded: a subscription at or after it yields it again.
    fn is_duplicate(&self, env: &TokenEnvelope) -> bool {
        let end_again = env.event.is_end() && !self.delivered;
        self.cursor.is_some_and(|c| env.seq <= c) && !end_again
    }

    /// Goes live when the first held-back envelope of the primary continues what was
    /// forwarded; true when it did.
    fn hand_over(&mut self) -> bool {
        while let Some(first) = self.held.front() {
            if self.is_duplicate(first) {
                self.held.pop_front();
                continue;
            }
            if continues(self.cursor, first) {
                self.live = true;
                self.log = None;
                return true;
            }
            return false;
        }
        false
    }

    fn drop_primary(&mut self) {
        self.primary = None;
        self.held.clear();
    }

    /// After the primary failed while live: the log, after the last forwarded envelope.
    async fn fall_back(&mut self, why: &str) -> Result<()> {
        tracing::debug!(stream = %self.key, why, "primary subscription lost; resuming from the history log");
        self.live = false;
        self.drop_primary();
        self.log = Some(self.log_source.subscribe(&self.key, self.cursor).await?);
        Ok(())
    }

    fn forward(mut self, env: TokenEnvelope) -> (Result<TokenEnvelope>, Self) {
        self.cursor = self.cursor.max(Some(env.seq));
        self.delivered = true;
        self.done = env.event.is_end();
        (Ok(env), self)
    }

    fn fail(mut self, e: Error) -> (Result<TokenEnvelope>, Self) {
        self.done = true;
        (Err(e), self)
    }
}
