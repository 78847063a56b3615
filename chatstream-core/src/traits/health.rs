//! Readiness probes: is a dependency (broker connection, store) reachable now?

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;

/// A cheap check that one dependency of a process can be used now: a broker connection is
/// open, a store answers. A readiness route (`chatstream_axum::ready`) asks every check of
/// its process on each probe and answers 503 with the failing check's name and error while
/// any fails.
///
/// Implementations must be cheap (a look at a connection's state, one `PING`) and should
/// not wait long: the route bounds each check with a timeout anyway and counts one that
/// runs past it as failed.
#[async_trait]
pub trait HealthCheck: Send + Sync + Debug + 'static {
    /// A short, fixed name for reports: `rabbitmq`, `redis`, `servicebus`, `postgres`.
    fn name(&self) -> &str;

    /// `Ok` when the dependency can be used now; the error says why not.
    async fn check(&self) -> Result<()>;
}

/// A shared [`HealthCheck`] trait object.
pub type DynHealthCheck = dyn HealthCheck;

#[async_trait]
impl<T: HealthCheck + ?Sized> HealthCheck for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn check(&self) -> Result<()> {
        (**self).check().await
    }
}

#[async_trait]
impl<T: HealthCheck + ?Sized> HealthCheck for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn check(&self) -> Result<()> {
        (**self).check().await
    }
}
