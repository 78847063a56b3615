//! The worker's side: every batch goes to the log, then to the primary broker.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{ChatRequest, Destination, DynTokenSink, Result, TokenEnvelope, TokenSink};

/// A [`TokenSink`] that appends every batch to a history log before it publishes it to the
/// primary broker (see the [module docs](crate::history)).
///
/// A publish returns once both accepted the batch, and fails when either fails. Overlapping
/// publishes to one destination reach the log in call order (the log's adapter orders them),
/// and reach the primary in the same order: each waits until the one before it has handed its
/// batch to the primary.
///
/// The destination of a request is the primary's; where the log wants a destination of its
/// own for the request (RabbitMQ's stream topology names its stream queue), both travel in one
/// [`Destination`], so batches are grouped by the pair. Logs keyed by stream (the Redis bus,
/// the in-memory broker) use the default destination.
#[derive(Debug)]
pub struct LoggedTokenSink {
    primary: Arc<DynTokenSink>,
    log: Arc<DynTokenSink>,
    lanes: Arc<Lanes>,
}

impl LoggedTokenSink {
    /// Publishes to `primary`, after appending to `log`.
    pub fn new(primary: Arc<DynTokenSink>, log: Arc<DynTokenSink>) -> Self {
        Self {
            primary,
            log,
            lanes: Arc::default(),
        }
    }
}

/// Marks a [`Destination`] that carries the primary's and the log's.
const PAIR: char = '\u{1}';

/// The primary's destination, and the log's when it is not the default.
fn pair(primary: Destination, log: &Destination) -> Destination {
    if log.0.is_empty() {
        return primary;
    }
    Destination(format!("{PAIR}{}:{}{}", primary.0.len(), primary.0, log.0).into())
}

/// The primary's and the log's destination out of [`pair`]'s.
fn split(destination: &Destination) -> (Destination, Destination) {
    let paired = destination
        .0
        .strip_prefix(PAIR)
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(len, rest)| {
            let len: usize = len.parse().ok()?;
            let (primary, log) = (rest.get(..len)?, rest.get(len..)?);
            Some((Destination(primary.into()), Destination(log.into())))
        });
    paired.unwrap_or_else(|| (destination.clone(), Destination::default()))
}

#[async_trait]
impl TokenSink for LoggedTokenSink {
    fn destination(&self, request: &ChatRequest) -> Destination {
        pair(
            self.primary.destination(request),
            &self.log.destination(request),
        )
    }

    async fn publish(&self, destination: &Destination, batch: &[TokenEnvelope]) -> Result<()> {
        let (primary, log) = split(destination);
        // Taken before the log's call, so the turns follow the call order.
        let mut turn = Lanes::take(&self.lanes, destination);
        self.log.publish(&log, batch).await?;
        turn.wait().await;
        let mut publish = self.primary.publish(&primary, batch);
        // Adapters order overlapping publishes by their first poll: once the primary has
        // this one in hand, the next batch may go.
        let first = futures::poll!(publish.as_mut());
        turn.finish();
        match first {
            Poll::Ready(result) => result,
            Poll::Pending => publish.await,
        }
    }
}

/// Turns per destination: the order in which batches may go on to the primary.
#[derive(Debug, Default)]
struct Lanes {
    lanes: Mutex<HashMap<Destination, Lane>>,
}

#[derive(Debug)]
struct Lane {
    /// Turns handed out.
    issued: u64,
    /// The turn that may go now: every earlier one is finished.
    next: u64,
    /// Finished turns after `next` (their batch failed at the log, or was dropped).
    finished: BTreeSet<u64>,
    tx: watch::Sender<u64>,
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, HashMap<Destination, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(lanes: &Arc<Self>, destination: &Destination) -> Turn {
        let mut map = lanes.lock();
        let lane = map.entry(destination.clone()).or_insert_with(|| Lane {
            issued: 0,
            next: 0,
            finished: BTreeSet::new(),
            tx: watch::channel(0).0,
        });
        let number = lane.issued;
        lane.issued += 1;
        Turn {
            lanes: lanes.clone(),
            destination: destination.clone(),
            number,
            done: false,
        }
    }
}

/// One publish's place in its destination's lane; finished when dropped.
#[derive(Debug)]
struct Turn {
    lanes: Arc<Lanes>,
    destination: Destination,
    number: u64,
    done: bool,
}

impl Turn {
    /// Waits until every earlier turn of the lane is finished.
    async fn wait(&self) {
        let rx = self
            .lanes
            .lock()
            .get(&self.destination)
            .map(|lane| lane.tx.subscribe());
        if let Some(mut rx) = rx {
            // An error means the lane is gone, which only happens once every turn finished.
            let _ = rx.wait_for(|next| *next >= self.number).await;
        }
    }

    /// Lets the next turn go (at once, or as soon as the earlier ones are finished).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut map = self.lanes.lock();
        let Some(lane) = map.get_mut(&self.destination) else {
            return;
        };
        lane.finished.insert(self.number);
        while lane.finished.remove(&lane.next) {
            lane.next += 1;
        }
        lane.tx.send_replace(lane.next);
        if lane.next == lane.issued {
            map.remove(&self.destination);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_pair_and_split() {
        let p = Destination("reply:gw.1".into());
        assert_eq!(pair(p.clone(), &Destination::default()), p);
        assert_eq!(split(&p), (p.clone(), Destination::default()));
        let l = Destination("stream:log:x".into());
        let both = pair(p.clone(), &l);
        assert_eq!(split(&both), (p, l.clone()));
        let empty_primary = pair(Destination::default(), &l);
        assert_eq!(split(&empty_primary), (Destination::default(), l));
        let odd = Destination(format!("{PAIR}99:short").into());
        assert_eq!(split(&odd), (odd.clone(), Destination::default()));
    }

    #[tokio::test]
    async fn turns_go_in_order_even_when_finished_out_of_order() {
        let lanes = Arc::new(Lanes::default());
        let d = Destination::default();
        let mut first = Lanes::take(&lanes, &d);
        let second = Lanes::take(&lanes, &d);
        let third = Lanes::take(&lanes, &d);
        drop(second); // failed at the log
        let waiting = tokio::spawn(async move {
            third.wait().await;
            third
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the third went before the first");
        first.wait().await;
        first.finish();
        let third = waiting.await.expect("third");
        drop(third);
        assert!(lanes.lock().is_empty(), "a finished lane is forgotten");
    }
}
