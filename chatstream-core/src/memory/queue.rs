//! The request queue of the in-memory broker: ready list, unacked set, dead letters.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::ChatRequest;

/// A queued request: typed, or raw bytes decoded on delivery (so malformed input can be
/// exercised exactly as on a real broker).
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Request(Box<ChatRequest>),
    Raw(Bytes),
}

#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) payload: Payload,
    /// How many times it has been delivered so far.
    pub(crate) deliveries: u32,
}

/// A request removed from the queue for good, with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The raw body (canonical JSON for typed requests).
    pub body: Bytes,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Deliveries made before it was dead-lettered.
    pub deliveries: u32,
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) ready: VecDeque<Queued>,
    pub(crate) unacked: HashMap<u64, (u64, Queued)>,
    pub(crate) next_tag: u64,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) closed: bool,
}

impl QueueState {
    /// Takes the next ready request for consumer `owner`; returns its tag.
    pub(crate) fn take(&mut self, owner: u64) -> Option<(u64, Queued)> {
        let mut q = self.ready.pop_front()?;
        q.deliveries += 1;
        self.next_tag += 1;
        let tag = self.next_tag;
        self.unacked.insert(tag, (owner, q.clone()));
        Some((tag, q))
    }

    /// Puts an unacked request back at the head of the queue (or dead-letters it when it
    /// reached the delivery limit). Returns true when something was requeued.
    pub(crate) fn requeue(&mut self, tag: u64, limit: u32) -> bool {
        let Some((_, q)) = self.unacked.remove(&tag) else {
            return false;
        };
        if q.deliveries >= limit {
            let reason = format!("delivery limit of {limit} reached");
            self.dead.push(dead_letter(q, reason));
            return false;
        }
        self.ready.push_front(q);
        true
    }

    pub(crate) fn settle(&mut self, tag: u64) -> Option<Queued> {
        self.unacked.remove(&tag).map(|(_, q)| q)
    }

    pub(crate) fn dead_letter(&mut self, tag: u64, reason: String) {
        if let Some(q) = self.settle(tag) {
            self.dead.push(dead_letter(q, reason));
        }
    }

    /// Tags held by one consumer.
    pub(crate) fn tags_of(&self, owner: u64) -> Vec<u64> {
        self.unacked
            .iter()
            .filter(|(_, (o, _))| *o == owner)
            .map(|(t, _)| *t)
            .collect()
    }
}

fn dead_letter(q: Queued, reason: String) -> DeadLetter {
    let body = match q.payload {
        Payload::Raw(b) => b,
        Payload::Request(r) => Bytes::from(serde_json::to_vec(&r).unwrap_or_default()),
    };
    DeadLetter {
        body,
        reason,
        deliveries: q.deliveries,
    }
}
