//! Streams from the gateways' session-enabled subscription: one session receiver per chat
//! session, shared by this process's subscribers of that session's streams.
//!
//! # Envelopes of other message ids
//!
//! A session carries every stream of one chat, and only one receiver may hold it. The
//! receiver of a session completes every message it gets: envelopes of a stream somebody here
//! subscribed to go to those subscribers; envelopes of another message id are kept
//! ("parked", up to [`MAX_PARKED`] per session) for as long as the receiver is open, and handed
//! to a subscriber of that id who comes later. When the last subscriber goes (its `End`
//! arrived, or the client left), the receiver closes at once — releasing the session for other
//! gateways — and parked envelopes are dropped. Leaving them in the session instead would make
//! every later reader of the chat trip over them: abandoned, Service Bus hands them straight
//! back to the same receiver (until its maximum delivery count dead-letters them); left locked,
//! they come back to the next reader. Seed 001 likewise reads the session and skips what is not
//! for its `chatMessageId`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use azservicebus::receiver::service_bus_session_receiver::ServiceBusSessionReceiverOptions;
use azservicebus::ServiceBusSessionReceiver;
use chatstream_core::wire::seed000::DecodedEnvelope;
use chatstream_core::{EnvelopeStream, Error, Result, StreamKey, TokenEnvelope, TokenSource};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ServiceBusConfig;
use crate::connection::ServiceBusConnection;
use crate::error::{sb_err, ServiceBusError};
use crate::message::decode_envelope;

/// Most envelopes of unsubscribed message ids kept per session receiver (oldest dropped).
pub const MAX_PARKED: usize = 4096;
/// Messages the session receiver asks Service Bus to push ahead (AMQP link credit, renewed
/// as messages are completed). With prefetch, receive calls never drain the link, and each
/// returns as soon as one message is there.
const PREFETCH: u32 = 64;

type Tx = mpsc::UnboundedSender<Result<TokenEnvelope>>;

struct Register {
    message_id: Arc<str>,
    tx: Tx,
}

type Pumps = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Register>>>>;

/// A [`TokenSource`] on the gateways' subscription (`token-streams`/`sse-service` by default),
/// which must require sessions. `subscribe` opens (or joins) the receiver of the chat's session
/// and yields the envelopes of the asked-for message id until `End`.
///
/// Replay is not supported: `after_seq = Some(_)` fails with [`Error::Unsupported`], since
/// Service Bus removes what a receiver completed. Envelopes without a `seq` (plain seed 000
/// producers) are numbered by arrival from 0.
#[derive(Debug, Clone)]
pub struct ServiceBusTokenSource {
    conn: ServiceBusConnection,
    pumps: Pumps,
}

impl ServiceBusTokenSource {
    pub(crate) fn new(conn: &ServiceBusConnection) -> Self {
        Self {
            conn: conn.clone(),
            pumps: Pumps::default(),
        }
    }

    /// Sessions with an open receiver now.
    pub fn open_sessions(&self) -> usize {
        lock(&self.pumps).len()
    }
}

fn lock(pumps: &Pumps) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Register>>> {
    pumps.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl TokenSource for ServiceBusTokenSource {
    async fn subscribe(&self, key: &StreamKey, after_seq: Option<u64>) -> Result<EnvelopeStream> {
        if after_seq.is_some() {
            return Err(Error::Unsupported(
                "replay on Service Bus: a completed message is gone",
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut reg = Register {
            message_id: key.message_id.clone(),
            tx,
        };
        let session = key.session_id.to_string();
        let mut pumps = lock(&self.pumps);
        if let Some(pump) = pumps.get(&session) {
            match pump.send(reg) {
                Ok(()) => return Ok(stream(rx)),
                Err(mpsc::error::SendError(back)) => reg = back,
            }
        }
        let (pump_tx, pump_rx) = mpsc::unbounded_channel();
        let _ = pump_tx.send(reg);
        pumps.insert(session.clone(), pump_tx);
        let pump = Pump {
            conn: self.conn.clone(),
            pumps: self.pumps.clone(),
            session,
            regs: pump_rx,
            subs: HashMap::new(),
            parked: VecDeque::new(),
            arrivals: HashMap::new(),
            registered: true,
        };
        tokio::spawn(pump.run());
        Ok(stream(rx))
    }
}

fn stream(rx: mpsc::UnboundedReceiver<Result<TokenEnvelope>>) -> EnvelopeStream {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

struct Pump {
    conn: ServiceBusConnection,
    pumps: Pumps,
    session: String,
    regs: mpsc::UnboundedReceiver<Register>,
    subs: HashMap<Arc<str>, Vec<Tx>>,
    parked: VecDeque<DecodedEnvelope>,
    /// Envelopes seen per message id: the `seq` of envelopes that carry none.
    arrivals: HashMap<Arc<str>, u64>,
    /// Whether the registry still lists this pump.
    registered: bool,
}

impl Pump {
    async fn run(mut self) {
        let config = self.conn.config.clone();
        let mut receiver = match self.acquire(&config).await {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.retire();
                self.fail(&e);
                return;
            }
            None => {
                self.retire();
                return;
            }
        };
        let mut next_renewal = Instant::now() + config.lock_renewal;
        while self.take_registrations() {
            if Instant::now() >= next_renewal {
                if let Err(e) = receiver.renew_session_lock().await {
                    tracing::warn!(error = %e, session = %self.session, "Service Bus: renewing a session lock failed");
                }
                next_renewal = Instant::now() + config.lock_renewal;
            }
            let all_gone = futures::future::join_all(self.subs.values().flatten().map(Tx::closed));
            let received = tokio::select! {
                r = receiver.receive_messages_with_max_wait_time(1, config.receive_wait) => r,
                _ = all_gone => continue,
            };
            match received {
                Ok(messages) => {
                    for message in messages {
                        match decode_envelope(&message) {
                            Ok(env) => self.route(env),
                            Err(e) => {
                                tracing::warn!(error = %e, session = %self.session, "Service Bus: skipping a malformed token message")
                            }
                        }
                        if let Err(e) = receiver.complete_message(&message).await {
                            tracing::warn!(error = %e, "Service Bus: completing a token message failed");
                        }
                    }
                }
                Err(e) => {
                    self.retire();
                    self.fail(&sb_err("receive")(e));
                    break;
                }
            }
        }
        self.retire();
        // Disposed, never just dropped (see `sink.rs`); a broker that does not answer within
        // the wait costs the connection its AMQP session.
        let _ = tokio::time::timeout(Duration::from_secs(30), receiver.dispose()).await;
    }

    /// Locks the session, retrying while another receiver holds it, for up to
    /// `session_wait`. `None` when every subscriber left meanwhile.
    async fn acquire(
        &mut self,
        config: &ServiceBusConfig,
    ) -> Option<Result<ServiceBusSessionReceiver>> {
        let deadline = Instant::now() + config.session_wait;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = self
                .conn
                .client
                .lock()
                .await
                .accept_session_for_subscription(
                    &config.token_streams_topic,
                    &config.token_streams_subscription,
                    self.session.clone(),
                    ServiceBusSessionReceiverOptions {
                        prefetch_count: PREFETCH,
                        ..ServiceBusSessionReceiverOptions::default()
                    },
                )
                .await;
            let error = match attempt {
                Ok(receiver) => return Some(Ok(receiver)),
                Err(e) => e,
            };
            if !self.take_registrations() {
                return None;
            }
            if Instant::now() + backoff >= deadline {
                tracing::warn!(error = %error, session = %self.session, "Service Bus: cannot lock session");
                return Some(Err(ServiceBusError::SessionLocked {
                    session: self.session.clone(),
                    waited: config.session_wait,
                }
                .into()));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Adds new subscribers and forgets gone ones; false when none is left (the pump is then
    /// unregistered, atomically with the check, so no subscriber can join a closing pump).
    fn take_registrations(&mut self) -> bool {
        let pumps = self.pumps.clone();
        loop {
            while let Ok(reg) = self.regs.try_recv() {
                self.add(reg);
            }
            for txs in self.subs.values_mut() {
                txs.retain(|tx| !tx.is_closed());
            }
            self.subs.retain(|_, txs| !txs.is_empty());
            if !self.subs.is_empty() {
                return true;
            }
            let mut map = lock(&pumps);
            if !self.regs.is_empty() {
                continue;
            }
            map.remove(&self.session);
            self.registered = false;
            return false;
        }
    }

    fn add(&mut self, reg: Register) {
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|e| e.key.message_id == reg.message_id);
        self.parked = rest;
        let mut ended = false;
        for env in mine {
            ended |= env.event.is_end();
            let env = self.number(env);
            let _ = reg.tx.send(Ok(env));
        }
        if !ended {
            self.subs.entry(reg.message_id).or_default().push(reg.tx);
        }
    }

    fn number(&mut self, env: DecodedEnvelope) -> TokenEnvelope {
        let n = self.arrivals.entry(env.key.message_id.clone()).or_insert(0);
        let fallback = *n;
        *n += 1;
        env.into_envelope(fallback)
    }

    fn route(&mut self, env: DecodedEnvelope) {
        let id = env.key.message_id.clone();
        if !self.subs.contains_key(&id) {
            if self.parked.len() >= MAX_PARKED {
                self.parked.pop_front();
            }
            self.parked.push_back(env);
            return;
        }
        let end = env.event.is_end();
        let env = self.number(env);
        if let Some(txs) = self.subs.get(&id) {
            for tx in txs {
                let _ = tx.send(Ok(env.clone()));
            }
        }
        if end {
            // Dropping the senders ends those streams after their End.
            self.subs.remove(&id);
        }
    }

    fn fail(&mut self, e: &Error) {
        while let Ok(reg) = self.regs.try_recv() {
            self.subs.entry(reg.message_id).or_default().push(reg.tx);
        }
        for tx in self.subs.values().flatten() {
            let _ = tx.send(Err(
                ServiceBusError::broker("subscribe", e.to_string()).into()
            ));
        }
        self.subs.clear();
    }

    /// Unregisters the pump (once): no subscriber can join it afterwards.
    fn retire(&mut self) {
        if std::mem::take(&mut self.registered) {
            lock(&self.pumps).remove(&self.session);
        }
    }
}
