//! Which streams a worker must stop generating.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use foldhash::{HashMap, HashSet};
use futures::task::AtomicWaker;
use futures::StreamExt;

use crate::{DynCancelChannel, StreamKey};

/// Cancels remembered for streams not (yet) running here, so a cancel that overtakes its
/// request still applies.
const REMEMBERED: usize = 4096;

/// Why a running generation must stop, set from outside its task: a flag its loop reads
/// without locking anything, and one waker for while it waits.
#[derive(Debug, Default)]
pub(crate) struct Interrupt {
    flags: AtomicU8,
    waker: AtomicWaker,
}

/// [`Interrupt`]: a cancel was published for the stream.
pub(crate) const CANCELLED: u8 = 1;
/// [`Interrupt`]: the worker's shutdown grace is over; the request goes back to the broker.
pub(crate) const ABORTED: u8 = 2;

impl Interrupt {
    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.waker.wake();
    }

    /// What was raised so far ([`CANCELLED`], [`ABORTED`]); 0 for nothing.
    pub(crate) fn raised(&self) -> u8 {
        self.flags.load(Ordering::Acquire)
    }

    /// Ready with what was raised, else registers `cx` to be woken when something is.
    pub(crate) fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<u8> {
        let raised = self.raised();
        if raised != 0 {
            return Poll::Ready(raised);
        }
        self.waker.register(cx.waker());
        match self.raised() {
            0 => Poll::Pending,
            raised => Poll::Ready(raised),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    running: HashMap<StreamKey, Arc<Interrupt>>,
    recent: HashSet<StreamKey>,
    order: VecDeque<StreamKey>,
    /// The shutdown grace is over: every stream, and any registered later, is aborted.
    aborted: bool,
}

/// Running streams and their cancel signals.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelRegistry {
    state: Arc<Mutex<State>>,
}

impl CancelRegistry {
    /// Starts listening to the channel (if any) in a background task.
    pub(crate) async fn start(channel: Option<Arc<DynCancelChannel>>) -> Self {
        let reg = Self::default();
        if let Some(ch) = channel {
            match ch.cancellations().await {
                Ok(mut stream) => {
                    let weak = Arc::downgrade(&reg.state);
                    tokio::spawn(async move {
                        while let Some(key) = stream.next().await {
                            let Some(state) = weak.upgrade() else { break };
                            CancelRegistry { state }.cancel(&key);
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for cancels"),
            }
        }
        reg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn cancel(&self, key: &StreamKey) {
        let mut st = self.lock();
        if let Some(interrupt) = st.running.get(key) {
            interrupt.raise(CANCELLED);
            return;
        }
        if st.recent.insert(key.clone()) {
            st.order.push_back(key.clone());
            if st.order.len() > REMEMBERED {
                if let Some(old) = st.order.pop_front() {
                    st.recent.remove(&old);
                }
            }
        }
    }

    /// Aborts every running stream, and every one registered from now on.
    pub(crate) fn abort_all(&self) {
        let mut st = self.lock();
        st.aborted = true;
        for interrupt in st.running.values() {
            interrupt.raise(ABORTED);
        }
    }

    /// Registers a running stream; the guard unregisters it.
    pub(crate) fn register(&self, key: &StreamKey) -> CancelGuard {
        let interrupt = Arc::new(Interrupt::default());
        let mut st = self.lock();
        if st.recent.remove(key) {
            interrupt.raise(CANCELLED);
        }
        if st.aborted {
            interrupt.raise(ABORTED);
        }
        st.running.insert(key.clone(), interrupt.clone());
        CancelGuard {
            registry: self.clone(),
            key: key.clone(),
            interrupt,
        }
    }
}

/// A registered stream.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    registry: CancelRegistry,
    key: StreamKey,
    pub(crate) interrupt: Arc<Interrupt>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().running.remove(&self.key);
    }
}
