//! Retried publishes in call order.
//!
//! The worker may have a few publishes in flight at once, and core asks adapters to send
//! them in call order: envelopes of one stream must be appended in `seq` order (an earlier
//! one arriving after a later one of the same attempt is refused). Sent once, they are in
//! order on the one shared connection. A publish that fails on connection trouble is sent
//! again, though, and then it must not be overtaken: each publish takes a [`Turn`] when it
//! is called, and
//!
//! - a first try waits while an earlier publish is being retried (it would pass it as soon
//!   as Redis is back);
//! - a retry waits until every earlier publish is over (one still in flight may yet fail
//!   and be retried itself).
//!
//! While nothing fails, nobody waits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The publishes of one sink (shared by its clones) not over yet.
#[derive(Debug, Default)]
pub(super) struct PublishOrder {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Publishes not over yet, by call order, and whether each is being retried.
    outstanding: BTreeMap<u64, bool>,
}

impl PublishOrder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn of a publish called now; over when dropped.
    pub(super) fn turn(self: &Arc<Self>) -> Turn {
        let mut s = self.lock();
        let ticket = s.next;
        s.next += 1;
        s.outstanding.insert(ticket, false);
        Turn {
            order: self.clone(),
            ticket,
            retrying: false,
        }
    }
}

/// One publish's place in the order (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct Turn {
    order: Arc<PublishOrder>,
    ticket: u64,
    retrying: bool,
}

impl Turn {
    /// Waits until this publish may be sent (again).
    pub(super) async fn go(&self) {
        loop {
            let notified = self.order.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.order.lock();
                let mut earlier = s.outstanding.range(..self.ticket);
                let clear = if self.retrying {
                    earlier.next().is_none()
                } else {
                    !earlier.any(|(_, &retrying)| retrying)
                };
                if clear {
                    return;
                }
            }
            notified.await;
        }
    }

    /// This publish failed and will be sent again: later ones wait for it.
    pub(super) fn retry(&mut self) {
        self.retrying = true;
        self.order.lock().outstanding.insert(self.ticket, true);
        self.order.changed.notify_waiters();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.order.lock().outstanding.remove(&self.ticket);
        self.order.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn nobody_waits_while_nothing_fails() {
        let order = Arc::new(PublishOrder::default());
        let a = order.turn();
        let b = order.turn();
        assert!(
            b.go().now_or_never().is_some(),
            "b goes while a is in flight"
        );
        assert!(a.go().now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_retried_publish_is_not_overtaken() {
        let order = Arc::new(PublishOrder::default());
        let mut a = order.turn();
        let mut b = order.turn();
        // Both were sent and both failed: b retries only once a is over.
        a.retry();
        b.retry();
        assert!(a.go().now_or_never().is_some());
        assert!(b.go().now_or_never().is_none(), "b must wait for a");
        // A publish called meanwhile waits too, before its first try.
        let c = order.turn();
        assert!(
            c.go().now_or_never().is_none(),
            "c must not pass a retried a"
        );
        let waiting = tokio::spawn(async move {
            b.go().await;
            drop(b);
            c.go().await;
        });
        drop(a); // a succeeded
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("b and c went once a was over")
            .expect("task");
    }

    #[tokio::test]
    async fn a_retry_waits_for_an_earlier_publish_still_in_flight() {
        let order = Arc::new(PublishOrder::default());
        let a = order.turn(); // in flight, its outcome unknown
        let mut b = order.turn();
        b.retry();
        assert!(b.go().now_or_never().is_none());
        drop(a);
        assert!(b.go().now_or_never().is_some());
    }
}
