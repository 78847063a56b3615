//! Per-stream coalescing of text deltas into fewer envelopes.

use std::time::Duration;

use tokio::time::Instant;

/// How text deltas of one stream are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Merge deltas arriving within this time of the last emitted envelope. Zero gives one
    /// envelope per token, as the seeds do.
    pub window: Duration,
    /// Emit at once when this many bytes are buffered.
    pub max_bytes: usize,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(10),
            max_bytes: 512,
        }
    }
}

impl CoalesceConfig {
    /// One envelope per token.
    pub fn off() -> Self {
        Self {
            window: Duration::ZERO,
            max_bytes: 0,
        }
    }
}

/// Leading-edge coalescer: a delta that arrives when nothing was emitted for a whole window
/// goes out at once (so the first token, and every token of a slow stream, is never held
/// back); deltas arriving faster are merged until the window since the last emission
/// closes or `max_bytes` is reached. At most one envelope per window per stream.
#[derive(Debug)]
pub(crate) struct Coalescer {
    config: CoalesceConfig,
    buf: String,
    last_emit: Option<Instant>,
}

impl Coalescer {
    pub(crate) fn new(config: CoalesceConfig) -> Self {
        Self {
            config,
            buf: String::new(),
            last_emit: None,
        }
    }

    /// Adds a delta; returns the text to emit now, if any. With coalescing off (a zero
    /// window) that is `text` itself, without reading the clock; so is a delta that arrives
    /// with nothing buffered and the window closed, without a copy.
    pub(crate) fn push(&mut self, text: String, now: impl FnOnce() -> Instant) -> Option<String> {
        if self.config.window.is_zero() && self.buf.is_empty() {
            return Some(text);
        }
        let now = now();
        if self.buf.is_empty() {
            self.buf = text;
        } else {
            self.buf.push_str(&text);
        }
        let window_closed = self
            .last_emit
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.window);
        if window_closed || self.buf.len() >= self.config.max_bytes {
            return self.take(now);
        }
        None
    }

    /// When the buffered text must go out, if any is buffered.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.buf.is_empty() {
            return None;
        }
        self.last_emit.map(|t| t + self.config.window)
    }

    /// Takes whatever is buffered.
    pub(crate) fn take(&mut self, now: Instant) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        self.last_emit = Some(now);
        Some(std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_token_goes_out_at_once_and_fast_ones_merge() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(CoalesceConfig::default());
        assert_eq!(c.push("Hel".into(), || t0).as_deref(), Some("Hel"));
        assert_eq!(c.push("lo".into(), || t0 + ms(1)), None);
        assert_eq!(c.push(" wor".into(), || t0 + ms(5)), None);
        assert_eq!(c.deadline(), Some(t0 + ms(10)));
        assert_eq!(c.take(t0 + ms(10)).as_deref(), Some("lo wor"));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn slow_tokens_are_never_held_back() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(CoalesceConfig::default());
        for i in 0..5 {
            assert_eq!(c.push("x".into(), || t0 + ms(30 * i)).as_deref(), Some("x"));
        }
    }

    #[test]
    fn size_limit_closes_an_envelope_early() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(CoalesceConfig {
            window: ms(10),
            max_bytes: 4,
        });
        c.push("a".into(), || t0);
        assert_eq!(c.push("bb".into(), || t0 + ms(1)), None);
        assert_eq!(c.push("cc".into(), || t0 + ms(2)).as_deref(), Some("bbcc"));
    }

    #[test]
    fn window_zero_is_one_envelope_per_token() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(CoalesceConfig::off());
        for _ in 0..3 {
            assert_eq!(c.push("t".into(), || t0).as_deref(), Some("t"));
        }
    }
}
