//! Requests from the workers' subscription, in peek-lock.
//!
//! azservicebus needs `&mut` on the receiver for receiving and for settling, so one task owns
//! it and serves commands in turn: receive calls (each with a maximum wait, so settlements
//! never wait longer than [`ServiceBusConfig::receive_wait`](crate::ServiceBusConfig)),
//! completions, abandons, dead-letters, and lock renewals of the messages in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusReceiverOptions};
use chatstream_core::{Acker, Delivery, MessageSource, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::connection::ServiceBusConnection;
use crate::error::{sb_err, ServiceBusError};
use crate::message::decode_request;

/// Longest dead-letter reason sent (Service Bus limits property sizes).
const MAX_REASON: usize = 1024;
/// Pause after a receive call that timed out before the next one. A receive that times out
/// drains the link (azservicebus with manual credit); the broker answers the drain with the
/// link's new delivery count, and credit granted before that answer arrives is computed from
/// the old count and comes to nothing, so an immediate retry would never get a message.
const DRAIN_SETTLE_MAX: Duration = Duration::from_millis(100);

type Reply<T> = oneshot::Sender<Result<T>>;

enum Cmd {
    Recv {
        reply: Reply<Option<Delivery>>,
        deadline: Option<Instant>,
    },
    Settle {
        id: u64,
        op: Op,
        reply: Option<Reply<()>>,
    },
}

#[derive(Debug)]
enum Op {
    Complete,
    Abandon,
    DeadLetter(String),
}

/// A [`MessageSource`] on the workers' subscription (`user-messages`/`worker-service` by
/// default). A request is completed only when the worker acks it (after its `End`), abandoned
/// on `nack(true)` or when its acker is dropped unsettled, and dead-lettered with the reason
/// on `dead_letter` and `nack(false)`. The attempt is Service Bus's delivery count. Dropping
/// the source (and every acker) closes the receiver link: Service Bus redelivers whatever it
/// still held.
#[derive(Debug)]
pub struct ServiceBusRequestSource {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ServiceBusRequestSource {
    pub(crate) async fn new(conn: &ServiceBusConnection) -> Result<Self> {
        let config = conn.config.clone();
        let receiver = conn
            .client
            .lock()
            .await
            .create_receiver_for_subscription(
                &config.user_messages_topic,
                &config.user_messages_subscription,
                ServiceBusReceiverOptions::default(),
            )
            .await
            .map_err(sb_err("open receiver"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            receiver,
            rx,
            tx: tx.downgrade(),
            in_flight: HashMap::new(),
            next_id: 0,
            waiters: VecDeque::new(),
            ready: VecDeque::new(),
            receive_wait: config.receive_wait,
            renewal: config.lock_renewal,
        };
        tokio::spawn(worker.run());
        Ok(Self { tx })
    }

    /// The next request, or `Ok(None)` when none arrived within `wait`.
    pub async fn recv_timeout(&self, wait: Duration) -> Result<Option<Delivery>> {
        self.ask(Some(Instant::now() + wait)).await
    }

    async fn ask(&self, deadline: Option<Instant>) -> Result<Option<Delivery>> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Recv { reply, deadline }).is_err() {
            return Ok(None);
        }
        rx.await.unwrap_or(Ok(None))
    }
}

#[async_trait]
impl MessageSource for ServiceBusRequestSource {
    async fn recv(&self) -> Result<Option<Delivery>> {
        self.ask(None).await
    }
}

/// Settles one request through the receiver's task.
#[derive(Debug)]
struct ServiceBusAcker {
    id: u64,
    tx: mpsc::UnboundedSender<Cmd>,
    settled: bool,
    /// When the request's lock expires (Unix milliseconds, `i64::MAX` when unknown); moved
    /// on by every renewal.
    locked_until: Arc<AtomicI64>,
}

impl ServiceBusAcker {
    async fn settle(mut self: Box<Self>, op: Op) -> Result<()> {
        self.settled = true;
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Settle {
            id: self.id,
            op,
            reply: Some(reply),
        };
        self.tx.send(cmd).map_err(|_| ServiceBusError::LinkClosed)?;
        rx.await.map_err(|_| ServiceBusError::LinkClosed)?
    }
}

#[async_trait]
impl Acker for ServiceBusAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.settle(Op::Complete).await
    }
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()> {
        match requeue {
            true => self.settle(Op::Abandon).await,
            false => {
                self.settle(Op::DeadLetter("rejected by the worker".into()))
                    .await
            }
        }
    }
    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<()> {
        self.settle(Op::DeadLetter(reason.to_owned())).await
    }

    /// The lock expired without a renewal (the link is down, or renewals failed for the
    /// whole lock duration): Service Bus gives the request to another receiver.
    fn is_lost(&self) -> bool {
        now_ms() >= self.locked_until.load(Ordering::Relaxed)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When `message`'s lock expires, in Unix milliseconds (`i64::MAX` when it does not say).
fn lock_expiry(message: &ServiceBusReceivedMessage) -> i64 {
    message.locked_until().map_or(i64::MAX, |t| {
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    })
}

impl Drop for ServiceBusAcker {
    fn drop(&mut self) {
        if !self.settled {
            // Give it back now rather than when the link closes.
            let _ = self.tx.send(Cmd::Settle {
                id: self.id,
                op: Op::Abandon,
                reply: None,
            });
        }
    }
}

struct Worker {
    receiver: ServiceBusReceiver,
    rx: mpsc::UnboundedReceiver<Cmd>,
    /// Weak, so that the channel closes when the source and every acker are gone.
    tx: mpsc::WeakUnboundedSender<Cmd>,
    /// Requests being answered, with their lock expiry shared with their acker.
    in_flight: HashMap<u64, (ServiceBusReceivedMessage, Arc<AtomicI64>)>,
    next_id: u64,
    waiters: VecDeque<(Reply<Option<Delivery>>, Option<Instant>)>,
    /// Received for a caller that went away; served to the next one.
    ready: VecDeque<ServiceBusReceivedMessage>,
    receive_wait: Duration,
    renewal: Duration,
}

impl Worker {
    async fn run(mut self) {
        let mut next_renewal = Instant::now() + self.renewal;
        let settle = (self.receive_wait / 2).min(DRAIN_SETTLE_MAX);
        let mut drained_at: Option<Instant> = None;
        'run: loop {
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd).await,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
                }
            }
            if Instant::now() >= next_renewal {
                self.renew().await;
                next_renewal = Instant::now() + self.renewal;
            }
            self.serve_ready();
            let resume = drained_at
                .map(|t| t + settle)
                .filter(|t| *t > Instant::now());
            if self.waiters.is_empty() || resume.is_some() {
                let wake = resume.map_or(next_renewal, |r| r.min(next_renewal));
                tokio::select! {
                    cmd = self.rx.recv() => match cmd {
                        Some(cmd) => self.handle(cmd).await,
                        None => break 'run,
                    },
                    _ = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            let now = Instant::now();
            let wait = self
                .waiters
                .iter()
                .filter_map(|(_, d)| *d)
                .map(|d| d.saturating_duration_since(now))
                .fold(self.receive_wait, Duration::min);
            let n = u32::try_from(self.waiters.len()).unwrap_or(u32::MAX);
            match self
                .receiver
                .receive_messages_with_max_wait_time(n, wait)
                .await
            {
                Ok(messages) => {
                    if messages.len() < n as usize {
                        drained_at = Some(Instant::now());
                    }
                    self.ready.extend(messages);
                }
                Err(e) => {
                    if let Some((reply, _)) = self.waiters.pop_front() {
                        let _ = reply.send(Err(sb_err("receive")(e)));
                    }
                }
            }
        }
        // Closed: give back what nobody took, then close the link (Service Bus redelivers
        // anything still locked by it).
        while let Some(m) = self.ready.pop_front() {
            let _ = self.receiver.abandon_message(&m, None).await;
        }
        let _ = self.receiver.dispose().await;
    }

    /// Hands received messages to waiting callers; answers callers whose wait is over.
    fn serve_ready(&mut self) {
        let now = Instant::now();
        self.waiters.retain(|(reply, _)| !reply.is_closed());
        while let Some((reply, deadline)) = self.waiters.pop_front() {
            if let Some(message) = self.ready.pop_front() {
                let delivery = self.delivery(message);
                let _ = reply.send(Ok(delivery));
            } else if deadline.is_some_and(|d| d <= now) {
                let _ = reply.send(Ok(None));
            } else {
                self.waiters.push_front((reply, deadline));
                break;
            }
        }
    }

    fn delivery(&mut self, message: ServiceBusReceivedMessage) -> Option<Delivery> {
        let tx = self.tx.upgrade()?;
        let id = self.next_id;
        self.next_id += 1;
        let locked_until = Arc::new(AtomicI64::new(lock_expiry(&message)));
        let delivery = Delivery {
            request: decode_request(&message),
            attempt: message.delivery_count().unwrap_or(1).max(1),
            acker: Box::new(ServiceBusAcker {
                id,
                tx,
                settled: false,
                locked_until: locked_until.clone(),
            }),
        };
        self.in_flight.insert(id, (message, locked_until));
        Some(delivery)
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Recv { reply, deadline } => self.waiters.push_back((reply, deadline)),
            Cmd::Settle { id, op, reply } => {
                let result = match self.in_flight.remove(&id) {
                    Some((message, _)) => self.settle(&message, op).await,
                    None => Ok(()),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    async fn settle(&mut self, message: &ServiceBusReceivedMessage, op: Op) -> Result<()> {
        match op {
            Op::Complete => self
                .receiver
                .complete_message(message)
                .await
                .map_err(sb_err("complete")),
            Op::Abandon => self
                .receiver
                .abandon_message(message, None)
                .await
                .map_err(sb_err("abandon")),
            Op::DeadLetter(reason) => {
                let options = DeadLetterOptions {
                    dead_letter_reason: Some(reason.chars().take(MAX_REASON).collect()),
                    dead_letter_error_description: None,
                    properties_to_modify: None,
                };
                self.receiver
                    .dead_letter_message(message, options)
                    .await
                    .map_err(sb_err("dead-letter"))
            }
        }
    }

    /// Keeps the locks of requests being answered (Service Bus drops a lock after the
    /// entity's lock duration, then redelivers the request to another worker).
    async fn renew(&mut self) {
        for (message, locked_until) in self.in_flight.values_mut() {
            match self.receiver.renew_message_lock(message).await {
                Ok(()) => locked_until.store(lock_expiry(message), Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "Service Bus: renewing a request's lock failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acker(locked_until: i64) -> ServiceBusAcker {
        let (tx, _rx) = mpsc::unbounded_channel();
        ServiceBusAcker {
            id: 1,
            tx,
            settled: true,
            locked_until: Arc::new(AtomicI64::new(locked_until)),
        }
    }

    #[test]
    fn a_request_is_lost_once_its_lock_expired_unrenewed() {
        assert!(acker(now_ms() - 1).is_lost(), "expired a moment ago");
        assert!(!acker(now_ms() + 60_000).is_lost(), "a minute left");
        assert!(!acker(i64::MAX).is_lost(), "expiry unknown");
        // A renewal moves the expiry on.
        let a = acker(now_ms() - 1);
        a.locked_until.store(now_ms() + 60_000, Ordering::Relaxed);
        assert!(!a.is_lost());
    }
}
