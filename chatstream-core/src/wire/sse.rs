//! Server-sent events as text: rendering a [`Frame`] and parsing a response body the way a
//! browser's `EventSource` does (the WHATWG rules, minus reconnection).
//!
//! chatstream-axum's SSE body writes with it, through
//! [`FrameEncoder::encode_sse`](crate::FrameEncoder::encode_sse) (whose overrides must write
//! exactly what [`render`] does); tests parse with it.

use bytes::BytesMut;

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

/// Appends what [`render`] returns to `out`, allocating nothing but `out`'s growth (to
/// render several frames into one buffer).
pub fn render_into(frame: &Frame, out: &mut String) {
    render_with(frame, out);
}

/// Appends what [`render`] returns to `out`, as bytes: what
/// [`FrameEncoder::encode_sse`](crate::FrameEncoder::encode_sse) writes by default.
pub fn render_into_bytes(frame: &Frame, out: &mut BytesMut) {
    render_with(frame, out);
}

/// Where SSE text is written: a `String` or a `BytesMut`.
trait TextOut {
    fn push(&mut self, text: &str);
    /// Pushes ASCII bytes (digits).
    fn push_ascii(&mut self, ascii: &[u8]);
}

impl TextOut for String {
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }
    fn push_ascii(&mut self, ascii: &[u8]) {
        ascii.iter().for_each(|b| self.push(char::from(*b)));
    }
}

impl TextOut for BytesMut {
    fn push(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
    fn push_ascii(&mut self, ascii: &[u8]) {
        self.extend_from_slice(ascii);
    }
}

fn render_with(frame: &Frame, out: &mut impl TextOut) {
    if let Some(id) = frame.id {
        out.push("id: ");
        out.push_ascii(u64_digits(id, &mut [0; 20]));
        out.push("\n");
    }
    if let Some(event) = &frame.event {
        out.push("event: ");
        out.push(event);
        out.push("\n");
    }
    for line in split_lines(&frame.data) {
        out.push("data: ");
        out.push(line);
        out.push("\n");
    }
    out.push("\n");
}

/// `n` in decimal ASCII digits, written at the end of `buf` (what `format!("{n}")` gives,
/// without the formatting machinery: an SSE body writes one per event).
fn u64_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Appends the SSE line `id: {id}` and its line break to `out`, as [`render`] writes it.
pub(crate) fn push_id_line(out: &mut BytesMut, id: u64) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(u64_digits(id, &mut [0; 20]));
    out.extend_from_slice(b"\n");
}

/// Splits on `\r\n`, `\n` or `\r`, as SSE does; always yields at least one line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.bytes().position(|b| b == b'\r' || b == b'\n') {
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
        for id in [0, 9, 10, 1_234_567, u64::MAX] {
            assert_eq!(
                render(&Frame::data("").with_id(id)),
                format!("id: {id}\ndata: \n\n")
            );
            let mut bytes = BytesMut::new();
            push_id_line(&mut bytes, id);
            assert_eq!(&bytes[..], format!("id: {id}\n").as_bytes());
        }
        let frame = Frame::data("a\r\nb\rc\n\nd\n").with_id(3);
        let mut bytes = BytesMut::new();
        render_into_bytes(&frame, &mut bytes);
        assert_eq!(&bytes[..], render(&frame).as_bytes());
        assert_eq!(
            render(&frame),
            "id: 3\ndata: a\ndata: b\ndata: c\ndata: \ndata: d\ndata: \n\n"
        );
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
