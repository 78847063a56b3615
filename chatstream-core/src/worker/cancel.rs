//! Which streams a worker must stop generating.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::Notify;

use crate::{DynCancelChannel, StreamKey};

/// Cancels remembered for streams not (yet) running here, so a cancel that overtakes its
/// request still applies.
const REMEMBERED: usize = 4096;

#[derive(Debug, Default)]
struct State {
    running: HashMap<StreamKey, Arc<Notify>>,
    recent: HashSet<StreamKey>,
    order: VecDeque<StreamKey>,
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
        if let Some(n) = st.running.get(key) {
            n.notify_one();
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

    /// Registers a running stream; the guard unregisters it.
    pub(crate) fn register(&self, key: &StreamKey) -> CancelGuard {
        let notify = Arc::new(Notify::new());
        let mut st = self.lock();
        if st.recent.remove(key) {
            notify.notify_one();
        }
        st.running.insert(key.clone(), notify.clone());
        CancelGuard {
            registry: self.clone(),
            key: key.clone(),
            notify,
        }
    }
}

/// A registered stream.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    registry: CancelRegistry,
    key: StreamKey,
    pub(crate) notify: Arc<Notify>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().running.remove(&self.key);
    }
}
