//! The OpenAI Responses API: the `response` object and its streamed semantic events.
//!
//! A streamed response is a sequence of SSE events, each `event: <type>` plus a JSON `data`
//! with the same `type` and a `sequence_number`:
//!
//! | when | events |
//! |---|---|
//! | the client connects ([`FrameEncoder::open`]) | `response.created` (status `queued` in background mode, else `in_progress`), `response.in_progress` |
//! | first token | `response.output_item.added` (a `message` item), `response.content_part.added` (an `output_text` part), then the delta |
//! | token | `response.output_text.delta` |
//! | status | nothing |
//! | tool call (a function tool of the request) | the open message item's closing events (below), then a `function_call` item: `response.output_item.added` (`arguments: ""`, `in_progress`), `response.function_call_arguments.delta` (the whole arguments: the worker publishes a call whole), `response.function_call_arguments.done`, `response.output_item.done`; text after a call opens a new message item |
//! | error | `error` (`code: "server_error"`); the end then sends `response.failed` |
//! | end | `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then `response.completed` (`stop`, `tool_calls`), `response.incomplete` (`length`: `incomplete_details.reason = "max_output_tokens"`; `content_filter`), or, for a cancelled response, `response.incomplete` whose response has `status: "cancelled"` (the API has no cancelled event); an answer without text still gets its (empty) message item unless it was cancelled or failed |
//! | reset (redelivery) | `error` with code `reset`, and nothing more: the SDKs append deltas and cannot drop text |
//! | fault | `error` with the fault's code, and nothing more |
//!
//! # Sequence numbers
//!
//! `sequence_number` is a function of the envelope: the `i`-th event (from 0) produced by
//! the envelope numbered `seq` is [`sequence_number`]`(seq, i)` `= 10 × (seq + 1) + i`, and
//! the two opening events are 0 and 1. An envelope produces at most seven events, so the
//! numbers grow strictly and never collide, across redeliveries too (a later attempt's
//! `seq` starts at `(attempt − 1) << 32`). They are not contiguous, which OpenAI's reference
//! does not ask for ("the sequence number of this event").
//!
//! Resume (`starting_after = N`): the events that close a response (`output_text.done`,
//! `response.completed`, …) repeat the whole text, so a resumed stream is encoded from the
//! stream's first envelope again and [`ResponsesOptions::starting_after`] drops every event
//! numbered `≤ N`: the client gets exactly the events it has not seen, numbered as before.
//! The frames of a reset or fault carry the number after the last one sent and no SSE id.

use std::sync::Arc;

use serde::Serialize;

use super::json::to_compact_json;
use crate::{ClientEvent, ClientTransport, FinishReason, Frame, FrameEncoder, StreamEvent};
use crate::{ResponseHeader, ResponseOutcome, ResponseStatus, StreamKey, TokenEnvelope};
use crate::{ToolCall, Usage};

/// Events an envelope's sequence number spans (see the [module docs](self)).
pub const EVENTS_PER_ENVELOPE: u64 = 10;

/// The `sequence_number` of the `index`-th event produced by envelope `seq`.
pub fn sequence_number(seq: u64, index: u64) -> u64 {
    seq.saturating_add(1)
        .saturating_mul(EVENTS_PER_ENVELOPE)
        .saturating_add(index)
}

/// The output item id of a response's message: `msg_` and the response id's suffix.
pub fn message_item_id(response_id: &str) -> String {
    let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("msg_{suffix}")
}

/// What a rendering of the response object shows beyond its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseView<'a> {
    /// The state.
    pub status: ResponseStatus,
    /// The answer text so far.
    pub text: &'a str,
    /// Show the message output item.
    pub with_item: bool,
    /// Token counts.
    pub usage: Option<Usage>,
    /// Why it ended, for `incomplete_details` and `error`.
    pub finish_reason: Option<&'a FinishReason>,
    /// The failure, for `error`.
    pub error: Option<&'a str>,
    /// Add the SDKs' convenience field `output_text` (non-streamed bodies only).
    pub output_text: bool,
    /// The output items besides the message.
    pub output: OutputView<'a>,
}

impl<'a> ResponseView<'a> {
    /// A response with no output yet.
    pub fn pending(status: ResponseStatus) -> Self {
        Self {
            status,
            text: "",
            with_item: false,
            usage: None,
            finish_reason: None,
            error: None,
            output_text: false,
            output: OutputView::Calls(&[]),
        }
    }

    /// A finished response.
    pub fn finished(outcome: &'a ResponseOutcome) -> Self {
        let calls = !outcome.tool_calls.is_empty();
        Self {
            status: outcome.status,
            text: &outcome.text,
            with_item: has_message_item(outcome.status, !outcome.text.is_empty(), calls),
            usage: outcome.usage,
            finish_reason: Some(&outcome.finish_reason),
            error: outcome.error.as_deref(),
            output_text: false,
            output: OutputView::Calls(&outcome.tool_calls),
        }
    }
}

/// True when a final response shows a message item: it has text, or it completed (or was
/// cut by its limit) with none and called no tool.
pub fn has_message_item(status: ResponseStatus, has_text: bool, called: bool) -> bool {
    has_text
        || (!called
            && matches!(
                status,
                ResponseStatus::Completed | ResponseStatus::Incomplete
            ))
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<ErrorOut<'a>>,
    incomplete_details: Option<Incomplete>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<u32>,
    metadata: &'a std::collections::BTreeMap<String, String>,
    model: &'a str,
    output: Vec<ItemOut<'a>>,
    parallel_tool_calls: bool,
    previous_response_id: Option<&'a str>,
    store: bool,
    temperature: Option<f64>,
    text: TextConfig,
    tool_choice: &'static str,
    tools: &'a [serde_json::Value],
    top_p: Option<f64>,
    truncation: &'static str,
    usage: Option<UsageOut>,
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_text: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize)]
struct TextConfig {
    format: Format,
}

#[derive(Serialize)]
struct Format {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// An output item: the answer's `message`, or a `function_call` of a client tool.
#[derive(Serialize)]
#[serde(untagged)]
enum ItemOut<'a> {
    Message(MessageOut<'a>),
    Call(CallOut<'a>),
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    role: &'static str,
    content: Vec<PartOut<'a>>,
}

#[derive(Serialize)]
struct CallOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    arguments: &'a str,
    call_id: &'a str,
    name: &'a str,
}

/// The output item id of a response's `n`-th (from 0) function call: `fc_`, the response
/// id's suffix, `_n`.
pub fn call_item_id(response_id: &str, n: usize) -> String {
    let suffix = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("fc_{suffix}_{n}")
}

fn call_item<'a>(header: &ResponseHeader, n: usize, call: &'a ToolCall, done: bool) -> ItemOut<'a> {
    ItemOut::Call(CallOut {
        id: call_item_id(&header.id, n),
        kind: "function_call",
        status: if done { "completed" } else { "in_progress" },
        arguments: if done { &call.arguments } else { "" },
        call_id: &call.id,
        name: &call.name,
    })
}

#[derive(Serialize)]
struct PartOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

fn part(text: &str) -> PartOut<'_> {
    PartOut {
        kind: "output_text",
        text,
        annotations: [],
    }
}

#[derive(Serialize)]
struct UsageOut {
    input_tokens: u32,
    input_tokens_details: Cached,
    output_tokens: u32,
    output_tokens_details: Reasoning,
    total_tokens: u32,
}

#[derive(Serialize)]
struct Cached {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct Reasoning {
    reasoning_tokens: u32,
}

fn usage_out(u: Usage) -> UsageOut {
    UsageOut {
        input_tokens: u.prompt_tokens,
        input_tokens_details: Cached { cached_tokens: 0 },
        output_tokens: u.completion_tokens,
        output_tokens_details: Reasoning {
            reasoning_tokens: 0,
        },
        total_tokens: u.total_tokens,
    }
}

fn item_status(status: ResponseStatus) -> &'static str {
    match status {
        ResponseStatus::Completed => "completed",
        ResponseStatus::Queued | ResponseStatus::InProgress => "in_progress",
        _ => "incomplete",
    }
}

fn item<'a>(id: String, status: &'static str, text: Option<&'a str>) -> ItemOut<'a> {
    ItemOut::Message(MessageOut {
        id,
        kind: "message",
        status,
        role: "assistant",
        content: text.map(part).into_iter().collect(),
    })
}

/// What the `output` of a response object lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputView<'a> {
    /// One message item saying the view's text (when [`ResponseView::with_item`]), then
    /// these function calls: the order of a stored response.
    Calls(&'a [ToolCall]),
    /// The items a stream produced, in its order.
    Items(&'a [StreamItem]),
}

/// An output item as a stream produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A message item: its id and text.
    Message {
        /// `msg_…`.
        id: String,
        /// What it says.
        text: String,
    },
    /// The `n`-th function call.
    Call {
        /// Its position among the response's calls, from 0.
        n: usize,
        /// The call.
        call: ToolCall,
    },
}

fn response_out<'a>(header: &'a ResponseHeader, view: &ResponseView<'a>) -> ResponseOut<'a> {
    let incomplete = match (view.status, view.finish_reason) {
        (ResponseStatus::Incomplete, Some(FinishReason::ContentFilter)) => Some("content_filter"),
        (ResponseStatus::Incomplete, _) => Some("max_output_tokens"),
        _ => None,
    };
    let error = (view.status == ResponseStatus::Failed).then(|| ErrorOut {
        code: "server_error",
        message: view.error.unwrap_or("the answer failed"),
    });
    let status = item_status(view.status);
    let output = match view.output {
        OutputView::Calls(calls) => {
            let message = view
                .with_item
                .then(|| item(message_item_id(&header.id), status, Some(view.text)));
            let calls = calls
                .iter()
                .enumerate()
                .map(|(n, call)| call_item(header, n, call, true));
            message.into_iter().chain(calls).collect()
        }
        OutputView::Items(items) => items
            .iter()
            .map(|i| match i {
                StreamItem::Message { id, text } => item(id.clone(), status, Some(text)),
                StreamItem::Call { n, call } => call_item(header, *n, call, true),
            })
            .collect(),
    };
    ResponseOut {
        id: &header.id,
        object: "response",
        created_at: header.created_at,
        status: view.status.as_str(),
        background: header.background,
        error,
        incomplete_details: incomplete.map(|reason| Incomplete { reason }),
        instructions: header.instructions.as_deref(),
        max_output_tokens: header.max_output_tokens,
        metadata: &header.metadata,
        model: &header.model,
        output,
        parallel_tool_calls: true,
        previous_response_id: header.previous_response_id.as_deref(),
        store: header.store,
        temperature: header.temperature,
        text: TextConfig {
            format: Format { kind: "text" },
        },
        tool_choice: "auto",
        tools: &header.tools,
        top_p: header.top_p,
        truncation: "disabled",
        usage: view.usage.map(usage_out),
        user: header.user.as_deref(),
        output_text: view.output_text.then_some(view.text),
    }
}

/// The `response` object as JSON.
pub fn response_json(header: &ResponseHeader, view: &ResponseView<'_>) -> String {
    to_compact_json(&response_out(header, view))
}

/// Options of the [`ResponsesEvents`] transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponsesOptions {
    /// What every response object in the events repeats.
    pub header: Arc<ResponseHeader>,
    /// Drop the events numbered `≤ N` (a resume with `starting_after=N`); the stream must
    /// then be read from its first envelope.
    pub starting_after: Option<u64>,
}

/// The Responses API's streamed semantic events (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct ResponsesEvents {
    options: ResponsesOptions,
}

impl ResponsesEvents {
    /// A transport with these options.
    pub fn new(options: ResponsesOptions) -> Self {
        Self { options }
    }
}

impl ClientTransport for ResponsesEvents {
    fn name(&self) -> &'static str {
        "responses"
    }

    fn encoder(&self, _key: &StreamKey) -> Box<dyn FrameEncoder> {
        Box::new(ResponsesEncoder {
            header: self.options.header.clone(),
            skip_through: self.options.starting_after,
            items: Vec::new(),
            message_open: false,
            failure: None,
            next: 0,
            finished: false,
        })
    }
}

#[derive(Debug)]
struct ResponsesEncoder {
    header: Arc<ResponseHeader>,
    skip_through: Option<u64>,
    /// The output items so far, in order (the text is in the message items).
    items: Vec<StreamItem>,
    /// The last item is a message still taking deltas.
    message_open: bool,
    failure: Option<String>,
    /// The number after the last event produced.
    next: u64,
    finished: bool,
}

#[derive(Serialize)]
struct ResponseEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    response: ResponseOut<'a>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct ItemEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    output_index: usize,
    item: ItemOut<'a>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct PartEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    part: PartOut<'a>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct TextEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    /// Always empty: no backend gives log probabilities (required by the reference).
    logprobs: [(); 0],
    sequence_number: u64,
}

#[derive(Serialize)]
struct ArgumentsEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    sequence_number: u64,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
    sequence_number: u64,
}

impl ResponsesEncoder {
    /// Pushes one event numbered `n` unless a resume skips it.
    fn push(&mut self, out: &mut Vec<Frame>, n: u64, kind: &'static str, data: String) {
        self.next = n + 1;
        if self.skip_through.is_some_and(|after| n <= after) {
            return;
        }
        out.push(Frame {
            id: Some(n),
            event: Some(kind.into()),
            data,
        });
    }

    fn response_event(&self, kind: &'static str, view: &ResponseView<'_>, n: u64) -> String {
        to_compact_json(&ResponseEvent {
            kind,
            response: response_out(&self.header, view),
            sequence_number: n,
        })
    }

    /// The open message item: its output index, id and text.
    fn message(&self) -> (usize, &str, &str) {
        match self.items.last() {
            Some(StreamItem::Message { id, text }) => (self.items.len() - 1, id, text),
            _ => (self.items.len(), "", ""),
        }
    }

    fn message_item_event(&self, kind: &'static str, status: &'static str, n: u64) -> String {
        let (index, id, text) = self.message();
        let text = (kind == "response.output_item.done").then_some(text);
        to_compact_json(&ItemEvent {
            kind,
            output_index: index,
            item: item(id.to_owned(), status, text),
            sequence_number: n,
        })
    }

    fn part_event(&self, kind: &'static str, done: bool, n: u64) -> String {
        let (index, id, text) = self.message();
        to_compact_json(&PartEvent {
            kind,
            item_id: id,
            output_index: index,
            content_index: 0,
            part: part(if done { text } else { "" }),
            sequence_number: n,
        })
    }

    fn text_event(&self, kind: &'static str, delta: Option<&str>, n: u64) -> String {
        let (index, id, text) = self.message();
        to_compact_json(&TextEvent {
            kind,
            item_id: id,
            output_index: index,
            content_index: 0,
            delta,
            text: delta.is_none().then_some(text),
            logprobs: [],
            sequence_number: n,
        })
    }

    fn error_event(code: &str, message: &str, n: u64) -> String {
        to_compact_json(&ErrorEvent {
            kind: "error",
            code,
            message,
            param: None,
            sequence_number: n,
        })
    }

    /// Pushes the `i`-th event of envelope `seq`, built by `build` with its number.
    fn emit(
        &mut self,
        out: &mut Vec<Frame>,
        seq: u64,
        i: &mut u64,
        kind: &'static str,
        build: impl FnOnce(&Self, u64) -> String,
    ) {
        let n = sequence_number(seq, *i);
        *i += 1;
        let data = build(self, n);
        self.push(out, n, kind, data);
    }

    /// Opens a message item unless one is open: the first is `msg_…`, one after a
    /// function call `msg_…_k` (`k` its output index).
    fn open_message(&mut self, seq: u64, i: &mut u64, out: &mut Vec<Frame>) {
        if self.message_open {
            return;
        }
        self.message_open = true;
        let mut id = message_item_id(&self.header.id);
        if !self.items.is_empty() {
            id = format!("{id}_{}", self.items.len());
        }
        self.items.push(StreamItem::Message {
            id,
            text: String::new(),
        });
        let kind = "response.output_item.added";
        self.emit(out, seq, i, kind, |s, n| {
            s.message_item_event(kind, "in_progress", n)
        });
        let kind = "response.content_part.added";
        self.emit(out, seq, i, kind, |s, n| s.part_event(kind, false, n));
    }

    /// Closes the open message item, its status `status`.
    fn close_message(&mut self, seq: u64, i: &mut u64, status: &'static str, out: &mut Vec<Frame>) {
        if !self.message_open {
            return;
        }
        self.message_open = false;
        let kind = "response.output_text.done";
        self.emit(out, seq, i, kind, |s, n| s.text_event(kind, None, n));
        let kind = "response.content_part.done";
        self.emit(out, seq, i, kind, |s, n| s.part_event(kind, true, n));
        let kind = "response.output_item.done";
        self.emit(out, seq, i, kind, |s, n| {
            s.message_item_event(kind, status, n)
        });
    }

    /// The function calls so far.
    fn calls(&self) -> usize {
        let is_call = |i: &&StreamItem| matches!(i, StreamItem::Call { .. });
        self.items.iter().filter(is_call).count()
    }

    /// The whole text: every message item's.
    fn text(&self) -> String {
        self.items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Message { text, .. } => Some(text.as_str()),
                StreamItem::Call { .. } => None,
            })
            .collect()
    }

    /// The `response.output_item.added` / `.done` event of function call `n_call`.
    fn call_item_event(
        &self,
        kind: &'static str,
        index: usize,
        n_call: usize,
        call: &ToolCall,
        n: u64,
    ) -> String {
        to_compact_json(&ItemEvent {
            kind,
            output_index: index,
            item: call_item(
                &self.header,
                n_call,
                call,
                kind == "response.output_item.done",
            ),
            sequence_number: n,
        })
    }

    /// A function call item, whole: added, its arguments in one delta, done.
    fn call(&mut self, seq: u64, i: &mut u64, call: &ToolCall, out: &mut Vec<Frame>) {
        self.close_message(seq, i, "completed", out);
        let n_call = self.calls();
        let index = self.items.len();
        self.items.push(StreamItem::Call {
            n: n_call,
            call: call.clone(),
        });
        let id = call_item_id(&self.header.id, n_call);
        let kind = "response.output_item.added";
        self.emit(out, seq, i, kind, |s, n| {
            s.call_item_event(kind, index, n_call, call, n)
        });
        let kind = "response.function_call_arguments.delta";
        self.emit(out, seq, i, kind, |_, n| {
            to_compact_json(&ArgumentsEvent {
                kind,
                item_id: &id,
                output_index: index,
                delta: Some(&call.arguments),
                name: None,
                arguments: None,
                sequence_number: n,
            })
        });
        let kind = "response.function_call_arguments.done";
        self.emit(out, seq, i, kind, |_, n| {
            to_compact_json(&ArgumentsEvent {
                kind,
                item_id: &id,
                output_index: index,
                delta: None,
                name: Some(&call.name),
                arguments: Some(&call.arguments),
                sequence_number: n,
            })
        });
        let kind = "response.output_item.done";
        self.emit(out, seq, i, kind, |s, n| {
            s.call_item_event(kind, index, n_call, call, n)
        });
    }

    fn envelope(&mut self, env: &TokenEnvelope, out: &mut Vec<Frame>) {
        let seq = env.seq;
        let mut i = 0;
        match &env.event {
            StreamEvent::Status { .. } => {}
            StreamEvent::Token { text } => {
                self.open_message(seq, &mut i, out);
                let kind = "response.output_text.delta";
                self.emit(out, seq, &mut i, kind, |s, n| {
                    s.text_event(kind, Some(text), n)
                });
                if let Some(StreamItem::Message { text: t, .. }) = self.items.last_mut() {
                    t.push_str(text);
                }
            }
            StreamEvent::ToolCall { call } => self.call(seq, &mut i, call, out),
            StreamEvent::Error { message } => {
                self.emit(out, seq, &mut i, "error", |_, n| {
                    Self::error_event("server_error", message, n)
                });
                self.failure = Some(message.clone());
            }
            StreamEvent::End {
                finish_reason,
                usage,
            } => {
                self.finished = true;
                let failed = self.failure.is_some();
                let status = ResponseStatus::of_finish(finish_reason, failed);
                let text = self.text();
                if has_message_item(status, !text.is_empty(), self.calls() > 0) {
                    if self.items.is_empty() {
                        self.open_message(seq, &mut i, out);
                    }
                    self.close_message(seq, &mut i, item_status(status), out);
                } else if self.message_open {
                    // A cancelled or failed answer without text: nothing was opened.
                    self.close_message(seq, &mut i, item_status(status), out);
                }
                let kind = match status {
                    ResponseStatus::Completed => "response.completed",
                    ResponseStatus::Failed => "response.failed",
                    _ => "response.incomplete",
                };
                self.emit(out, seq, &mut i, kind, |s, n| {
                    let view = ResponseView {
                        status,
                        text: &text,
                        with_item: true,
                        usage: *usage,
                        finish_reason: Some(finish_reason),
                        error: s.failure.as_deref(),
                        output_text: false,
                        output: OutputView::Items(&s.items),
                    };
                    s.response_event(kind, &view, n)
                });
            }
        }
    }

    fn fault(&mut self, code: &str, message: &str, out: &mut Vec<Frame>) {
        self.finished = true;
        let n = self.next;
        if self.skip_through.is_some_and(|after| n <= after) {
            return;
        }
        out.push(Frame {
            id: None,
            event: Some("error".into()),
            data: Self::error_event(code, message, n),
        });
    }
}

impl FrameEncoder for ResponsesEncoder {
    fn open(&mut self, out: &mut Vec<Frame>) {
        let created = if self.header.background {
            ResponseStatus::Queued
        } else {
            ResponseStatus::InProgress
        };
        let ev = self.response_event("response.created", &ResponseView::pending(created), 0);
        self.push(out, 0, "response.created", ev);
        let view = ResponseView::pending(ResponseStatus::InProgress);
        let ev = self.response_event("response.in_progress", &view, 1);
        self.push(out, 1, "response.in_progress", ev);
    }

    fn encode(&mut self, event: &ClientEvent, out: &mut Vec<Frame>) {
        if self.finished {
            return;
        }
        match event {
            ClientEvent::Envelope(env) => self.envelope(env, out),
            ClientEvent::Reset { .. } => self.fault(
                "reset",
                "the answer was interrupted and restarted; read it again",
                out,
            ),
            ClientEvent::Fault(fault) => self.fault(fault.code(), &fault.message(), out),
        }
    }
}

/// Reads a response's stream into its [`ResponseOutcome`]: feed it every event; it says
/// the outcome at the `End`. A reset (redelivery) starts the text over.
#[derive(Debug, Default)]
pub struct OutcomeCollector {
    text: String,
    failure: Option<String>,
    tool_calls: Vec<ToolCall>,
}

impl OutcomeCollector {
    /// Takes one event; the outcome once the stream ended.
    pub fn push(&mut self, event: &ClientEvent) -> Option<ResponseOutcome> {
        match event {
            ClientEvent::Envelope(env) => match &env.event {
                StreamEvent::Token { text } => self.text.push_str(text),
                StreamEvent::ToolCall { call } => self.tool_calls.push(call.clone()),
                StreamEvent::Error { message } => self.failure = Some(message.clone()),
                StreamEvent::End {
                    finish_reason,
                    usage,
                } => {
                    let failed = self.failure.is_some();
                    return Some(ResponseOutcome {
                        status: ResponseStatus::of_finish(finish_reason, failed),
                        text: std::mem::take(&mut self.text),
                        usage: *usage,
                        finish_reason: finish_reason.clone(),
                        error: self.failure.take(),
                        tool_calls: std::mem::take(&mut self.tool_calls),
                    });
                }
                StreamEvent::Status { .. } => {}
            },
            ClientEvent::Reset { .. } => {
                self.text.clear();
                self.failure = None;
                self.tool_calls.clear();
            }
            ClientEvent::Fault(_) => {}
        }
        None
    }
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
