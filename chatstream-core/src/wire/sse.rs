//! Server-sent events as text: rendering a [`Frame`] and parsing a response body the way a
//! browser's `EventSource` does (the WHATWG rules, minus reconnection).
//!
//! Adapters with an SSE library of their own (axum) render frames with it; this module is for
//! tests and for adapters without one.

use crate::Frame;

/// One event as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` field set in this event's block, if any.
    pub id: Option<String>,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Renders a frame as SSE text: `id:`, `event:`, one `data:` line per line of data, a blank
/// line.
pub fn render(frame: &Frame) -> String {
    let mut out = String::with_capacity(frame.data.len() + 32);
    render_into(frame, &mut out);
    out
}

/// Appends what [`render`] returns to `out`, allocating nothing but `out`'s growth (an SSE
/// body renders every frame of a chunk into one buffer).
pub fn render_into(frame: &Frame, out: &mut String) {
    use std::fmt::Write;
    if let Some(id) = frame.id {
        out.push_str("id: ");
        let _ = write!(out, "{id}");
        out.push('\n');
    }
    if let Some(event) = &frame.event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    for line in split_lines(&frame.data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// Splits on `\r\n`, `\n` or `\r`, as SSE does; always yields at least one line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Parses an SSE body into the events a browser would dispatch. Comments (`:` lines) and
/// unknown fields are ignored; a block without `data:` is not dispatched; an unterminated last
/// block is dropped, as `EventSource` drops it.
pub fn parse(body: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut current = SseEvent::default();
    let mut has_data = false;
    let mut lines: Vec<&str> = split_lines(body).collect();
    // The text after the last line break is an incomplete line.
    lines.pop();
    for line in lines {
        if line.is_empty() {
            if has_data {
                events.push(std::mem::take(&mut current));
            } else {
                current = SseEvent::default();
            }
            has_data = false;
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if has_data {
                    current.data.push('\n');
                }
                current.data.push_str(value);
                has_data = true;
            }
            "event" => current.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => current.id = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_writes_id_event_and_data_lines() {
        let frame = Frame::data("a\nb").with_id(7);
        assert_eq!(render(&frame), "id: 7\ndata: a\ndata: b\n\n");
        let mut named = Frame::data("{}");
        named.event = Some("x".into());
        assert_eq!(render(&named), "event: x\ndata: {}\n\n");
    }

    #[test]
    fn parse_round_trips_render() {
        let frames = [
            Frame::data("one").with_id(1),
            Frame::data("two\r\nlines"),
            Frame::data(""),
        ];
        let body: String = frames.iter().map(render).collect();
        let events = parse(&body);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].data, "one");
        assert_eq!(events[1].data, "two\nlines");
        assert_eq!(events[2].data, "");
    }

    #[test]
    fn parse_follows_eventsource_rules() {
        let body = ": comment\nretry: 10\ndata:no-space\ndata\n\nid: 3\n\ndata: tail";
        let events = parse(body);
        assert_eq!(
            events,
            vec![SseEvent {
                id: None,
                event: None,
                data: "no-space\n".into()
            }]
        );
    }
}
