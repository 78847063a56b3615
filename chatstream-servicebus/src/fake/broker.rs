//! The fake's entities and their state: topics fan messages out to subscriptions; each
//! subscription (and its dead-letter queue) is a peek-lock queue ordered by sequence number.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::sync::Notify;

use super::amqp::{body_bytes, now_ms, strip_authority};
use super::FakeConfig;

/// A message as the fake stores it.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// A queue: a subscription or its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QueueId {
    pub(crate) topic: String,
    pub(crate) subscription: String,
    pub(crate) dead_letter: bool,
}

/// What an address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entity {
    Cbs,
    Management,
    Topic(String),
    Queue(QueueId),
}

/// One stored message.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: i64,
    pub(crate) message: AmqpMessage,
    /// Failed deliveries so far (the AMQP header's `delivery-count`).
    pub(crate) delivery_count: u32,
    pub(crate) enqueued_ms: i64,
}

impl Stored {
    pub(crate) fn session(&self) -> Option<&str> {
        self.message.properties.as_ref()?.group_id.as_deref()
    }
}

/// How a delivery was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Completed: removed.
    Complete,
    /// Back to the queue with a higher delivery count (abandon, release, link closed).
    Redeliver,
    /// Back to the queue as if never sent (the link went away before the transfer).
    Withdraw,
    /// Moved to the dead-letter queue.
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
    },
}

/// A dead-lettered message, as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeadLetter {
    /// The message body (its data sections concatenated).
    pub body: Vec<u8>,
    /// `DeadLetterReason`, when the receiver gave one.
    pub reason: Option<String>,
    /// `DeadLetterErrorDescription`, when the receiver gave one.
    pub description: Option<String>,
}

#[derive(Debug, Default)]
struct Queue {
    requires_session: bool,
    available: BTreeMap<i64, Stored>,
    locked: HashMap<[u8; 16], Stored>,
    /// Session id → the link holding its lock.
    session_locks: HashMap<String, u64>,
    notify: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Vec<String>>,
    queues: HashMap<QueueId, Queue>,
    next_seq: i64,
}

/// Why a session could not be locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionLockError {
    /// Another receiver holds it (`com.microsoft:session-cannot-be-locked`).
    Locked,
    /// Next-available asked and no unlocked session has messages (`com.microsoft:timeout`).
    NoneAvailable,
    /// The entity does not require sessions.
    NotSessionful,
    /// No such entity.
    NotFound,
}

/// The fake's state, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Broker {
    state: Mutex<State>,
}

impl Broker {
    pub(crate) fn new(config: &FakeConfig) -> Self {
        let mut state = State::default();
        for topic in &config.topics {
            let name = topic.name.to_lowercase();
            let mut subs = Vec::new();
            for sub in &topic.subscriptions {
                let sub_name = sub.name.to_lowercase();
                for dead_letter in [false, true] {
                    let id = QueueId {
                        topic: name.clone(),
                        subscription: sub_name.clone(),
                        dead_letter,
                    };
                    let queue = Queue {
                        requires_session: sub.requires_session && !dead_letter,
                        ..Queue::default()
                    };
                    state.queues.insert(id, queue);
                }
                subs.push(sub_name);
            }
            state.topics.insert(name, subs);
        }
        Self {
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a fake; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves a link address (`amqp://host/topic/Subscriptions/sub`, `$cbs`, …).
    pub(crate) fn resolve(&self, address: &str) -> Option<Entity> {
        let path = strip_authority(address).trim_matches('/').to_lowercase();
        let segments: Vec<&str> = path.split('/').collect();
        let state = self.lock();
        match segments.as_slice() {
            ["$cbs"] => Some(Entity::Cbs),
            [.., "$management"] => Some(Entity::Management),
            [topic] => state
                .topics
                .contains_key(*topic)
                .then(|| Entity::Topic((*topic).to_owned())),
            [topic, "subscriptions", sub, rest @ ..] => {
                let dead_letter = match rest {
                    [] => false,
                    ["$deadletterqueue"] => true,
                    _ => return None,
                };
                let id = QueueId {
                    topic: (*topic).to_owned(),
                    subscription: (*sub).to_owned(),
                    dead_letter,
                };
                state.queues.contains_key(&id).then_some(Entity::Queue(id))
            }
            _ => None,
        }
    }

    /// Whether a queue requires sessions.
    pub(crate) fn requires_session(&self, id: &QueueId) -> bool {
        self.lock()
            .queues
            .get(id)
            .is_some_and(|q| q.requires_session)
    }

    /// Stores a message in every subscription of `topic`. Fails when a subscription requires
    /// sessions and the message has no session id, as Service Bus does.
    pub(crate) fn publish(&self, topic: &str, messages: Vec<AmqpMessage>) -> Result<(), String> {
        let mut state = self.lock();
        let Some(subs) = state.topics.get(topic).cloned() else {
            return Err(format!("no topic {topic}"));
        };
        for message in &messages {
            let has_session = message
                .properties
                .as_ref()
                .is_some_and(|p| p.group_id.is_some());
            let needs_session = subs.iter().any(|s| {
                state
                    .queues
                    .get(&queue_id(topic, s, false))
                    .is_some_and(|q| q.requires_session)
            });
            if needs_session && !has_session {
                return Err(
                    "a subscription requires sessions and the message has no SessionId".into(),
                );
            }
        }
        let now = now_ms();
        for message in messages {
            let seq = state.next_seq;
            state.next_seq += 1;
            for sub in &subs {
                if let Some(q) = state.queues.get_mut(&queue_id(topic, sub, false)) {
                    q.available.insert(
                        seq,
                        Stored {
                            seq,
                            message: message.clone(),
                            delivery_count: 0,
                            enqueued_ms: now,
                        },
                    );
                    q.notify.notify_waiters();
                }
            }
        }
        Ok(())
    }

    /// Woken whenever messages become available in the queue.
    pub(crate) fn notifier(&self, id: &QueueId) -> Arc<Notify> {
        self.lock()
            .queues
            .get(id)
            .map(|q| q.notify.clone())
            .unwrap_or_default()
    }

    /// Locks a session of a sessionful queue for `link`: `Some(id)` asks for that session,
    /// `None` for the next one with available messages.
    pub(crate) fn lock_session(
        &self,
        id: &QueueId,
        session: Option<&str>,
        link: u64,
    ) -> Result<String, SessionLockError> {
        let mut state = self.lock();
        let q = state.queues.get_mut(id).ok_or(SessionLockError::NotFound)?;
        if !q.requires_session {
            return Err(SessionLockError::NotSessionful);
        }
        let chosen = match session {
            Some(s) if q.session_locks.contains_key(s) => return Err(SessionLockError::Locked),
            Some(s) => s.to_owned(),
            None => q
                .available
                .values()
                .filter_map(Stored::session)
                .find(|s| !q.session_locks.contains_key(*s))
                .map(str::to_owned)
                .ok_or(SessionLockError::NoneAvailable)?,
        };
        q.session_locks.insert(chosen.clone(), link);
        Ok(chosen)
    }

    /// Releases a session lock held by `link`.
    pub(crate) fn unlock_session(&self, id: &QueueId, session: &str, link: u64) {
        let mut state = self.lock();
        if let Some(q) = state.queues.get_mut(id) {
            if q.session_locks.get(session) == Some(&link) {
                q.session_locks.remove(session);
                q.notify.notify_waiters();
            }
        }
    }

    /// Takes the first available message (of `session`, when given) and locks it under `token`.
    pub(crate) fn take(
        &self,
        id: &QueueId,
        session: Option<&str>,
        token: [u8; 16],
    ) -> Option<Stored> {
        let mut state = self.lock();
        let q = state.queues.get_mut(id)?;
        let seq = *q
            .available
            .iter()
            .find(|(_, m)| session.is_none() || m.session() == session)?
            .0;
        let stored = q.available.remove(&seq)?;
        q.locked.insert(token, stored.clone());
        Some(stored)
    }

    /// Settles the message locked under `token`.
    pub(crate) fn settle(&self, id: &QueueId, token: [u8; 16], how: Settle) {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(id) else {
            return;
        };
        let Some(mut stored) = q.locked.remove(&token) else {
            return;
        };
        match how {
            Settle::Complete => {}
            Settle::Redeliver | Settle::Withdraw => {
                if how == Settle::Redeliver {
                    stored.delivery_count += 1;
                }
                q.available.insert(stored.seq, stored);
                q.notify.notify_waiters();
            }
            Settle::DeadLetter {
                reason,
                description,
            } => {
                let props = stored
                    .message
                    .application_properties
                    .get_or_insert_with(Default::default);
                for (key, value) in [
                    ("DeadLetterReason", reason),
                    ("DeadLetterErrorDescription", description),
                ] {
                    if let Some(v) = value {
                        props.0.insert(key.to_owned(), SimpleValue::String(v));
                    }
                }
                let dlq_id = QueueId {
                    dead_letter: true,
                    ..id.clone()
                };
                if let Some(dlq) = state.queues.get_mut(&dlq_id) {
                    dlq.available.insert(stored.seq, stored);
                    dlq.notify.notify_waiters();
                }
            }
        }
    }

    /// The messages of a dead-letter queue (available ones, not those locked by a reader).
    pub(crate) fn dead_letters(&self, topic: &str, subscription: &str) -> Vec<FakeDeadLetter> {
        let state = self.lock();
        let id = queue_id(&topic.to_lowercase(), &subscription.to_lowercase(), true);
        let Some(q) = state.queues.get(&id) else {
            return Vec::new();
        };
        q.available
            .values()
            .map(|m| {
                let prop = |k: &str| match m.message.application_properties.as_ref()?.0.get(k) {
                    Some(SimpleValue::String(s)) => Some(s.clone()),
                    _ => None,
                };
                FakeDeadLetter {
                    body: body_bytes(&m.message.body),
                    reason: prop("DeadLetterReason"),
                    description: prop("DeadLetterErrorDescription"),
                }
            })
            .collect()
    }

    /// Messages waiting (not locked) in a subscription.
    pub(crate) fn available(&self, topic: &str, subscription: &str) -> usize {
        let id = queue_id(&topic.to_lowercase(), &subscription.to_lowercase(), false);
        self.lock().queues.get(&id).map_or(0, |q| q.available.len())
    }
}

fn queue_id(topic: &str, subscription: &str, dead_letter: bool) -> QueueId {
    QueueId {
        topic: topic.to_owned(),
        subscription: subscription.to_owned(),
        dead_letter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_resolve_case_insensitively() {
        let broker = Broker::new(&FakeConfig::new().topic("t", [("s", false)]));
        let q = |dl| {
            Some(Entity::Queue(QueueId {
                topic: "t".into(),
                subscription: "s".into(),
                dead_letter: dl,
            }))
        };
        assert_eq!(
            broker.resolve("amqp://127.0.0.1:5/T"),
            Some(Entity::Topic("t".into()))
        );
        assert_eq!(broker.resolve("amqp://h/t/Subscriptions/s"), q(false));
        assert_eq!(
            broker.resolve("t/subscriptions/S/$DeadLetterQueue"),
            q(true)
        );
        assert_eq!(
            broker.resolve("t/subscriptions/s/$management"),
            Some(Entity::Management)
        );
        assert_eq!(broker.resolve("$cbs"), Some(Entity::Cbs));
        assert_eq!(broker.resolve("nope"), None);
        assert_eq!(broker.resolve("t/subscriptions/x"), None);
    }
}
