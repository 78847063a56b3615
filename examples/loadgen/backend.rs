//! The load backend: answers every request with numbered tokens, each carrying the moment
//! it was emitted, at the rate and count the request asks for.
//!
//! A token is `"{k}:{µs} "`: its number in the answer (from 0) and the wall-clock time
//! (`CLOCK_REALTIME`, microseconds since the run's epoch) at which the backend yielded it.
//! Worker, gateway and clients run on one machine, so the client subtracts that from its
//! own clock to get the latency the pipeline added, and checks the numbers for gaps and
//! duplicates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chatstream::{
    ChatRequest, Conversation, Error, FinishReason, LlmBackend, LlmEvent, LlmStream, Result,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

/// Microseconds since the Unix epoch on the wall clock, shared by every process of a run.
pub(crate) fn realtime_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What one load request asks for; travels as the request's text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Tokens in the answer.
    pub(crate) tokens: u32,
    /// Tokens per second; 0: as fast as the worker takes them.
    pub(crate) rate: f64,
    /// Delay of the first token after the start signal, spreading streams over one period.
    pub(crate) phase: Duration,
}

impl Plan {
    /// The request text.
    pub(crate) fn text(&self) -> String {
        format!(
            "loadgen tokens={} rate={} phase_us={}",
            self.tokens,
            self.rate,
            self.phase.as_micros()
        )
    }

    fn parse(text: &str) -> Option<Plan> {
        let mut plan = Plan {
            tokens: 0,
            rate: 0.0,
            phase: Duration::ZERO,
        };
        let mut words = text.split_whitespace();
        if words.next()? != "loadgen" {
            return None;
        }
        for word in words {
            let (name, value) = word.split_once('=')?;
            match name {
                "tokens" => plan.tokens = value.parse().ok()?,
                "rate" => plan.rate = value.parse().ok()?,
                "phase_us" => plan.phase = Duration::from_micros(value.parse().ok()?),
                _ => return None,
            }
        }
        Some(plan)
    }
}

/// Emits what a [`Plan`] asks for once the start signal is given.
#[derive(Debug, Clone)]
pub(crate) struct LoadBackend {
    /// One text delta per character (the seeds' way) instead of one per token.
    pub(crate) chars: bool,
    /// The run's epoch, microseconds since the Unix epoch.
    pub(crate) epoch_us: u64,
    /// Turns true when the driver says go.
    pub(crate) go: watch::Receiver<bool>,
}

struct Emitter {
    plan: Plan,
    epoch_us: u64,
    go: watch::Receiver<bool>,
    start: Option<Instant>,
    next: u32,
}

impl Emitter {
    async fn next(mut self) -> Option<(String, Self)> {
        if self.next >= self.plan.tokens {
            return None;
        }
        let start = match self.start {
            Some(s) => s,
            None => {
                let _ = self.go.wait_for(|go| *go).await;
                *self.start.insert(Instant::now() + self.plan.phase)
            }
        };
        if self.plan.rate > 0.0 {
            let due = start + Duration::from_secs_f64(f64::from(self.next) / self.plan.rate);
            tokio::time::sleep_until(due).await;
        } else if self.next == 0 {
            tokio::time::sleep_until(start).await;
        }
        let text = format!(
            "{}:{} ",
            self.next,
            realtime_us().saturating_sub(self.epoch_us)
        );
        self.next += 1;
        Some((text, self))
    }
}

#[async_trait]
impl LlmBackend for LoadBackend {
    async fn stream(&self, request: &ChatRequest, _: &Conversation) -> Result<LlmStream> {
        let plan = Plan::parse(request.last_user_text())
            .ok_or_else(|| Error::invalid("loadgen request", "not a load plan"))?;
        let emitter = Emitter {
            plan,
            epoch_us: self.epoch_us,
            go: self.go.clone(),
            start: None,
            next: 0,
        };
        let tokens = futures::stream::unfold(emitter, Emitter::next);
        let deltas = if self.chars {
            tokens
                .flat_map(|t| {
                    let chars: Vec<_> = t
                        .chars()
                        .map(|c| Ok(LlmEvent::TextDelta(c.to_string())))
                        .collect();
                    futures::stream::iter(chars)
                })
                .boxed()
        } else {
            tokens.map(|t| Ok(LlmEvent::TextDelta(t))).boxed()
        };
        let finish = futures::stream::iter([Ok(LlmEvent::Finish(FinishReason::Stop))]);
        Ok(deltas.chain(finish).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_round_trips_through_text() {
        let plan = Plan {
            tokens: 200,
            rate: 20.0,
            phase: Duration::from_micros(1234),
        };
        assert_eq!(Plan::parse(&plan.text()), Some(plan));
        assert_eq!(Plan::parse("hello"), None);
    }
}
