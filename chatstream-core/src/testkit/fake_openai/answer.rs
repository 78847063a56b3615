//! Serving one connection: routing, and the chat completion answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{read_request, respond, respond_error, write_event, write_sse_head};
use super::{lock, Answer, Behaviour, Framing, Shared, MODEL};

pub(super) async fn serve(mut socket: TcpStream, shared: Arc<Shared>) {
    let request = match read_request(&mut socket).await {
        None => return,
        Some(Err((status, message))) => {
            let _ = respond_error(&mut socket, status, message).await;
            return;
        }
        Some(Ok(request)) => request,
    };
    let path = request.path.strip_prefix("/v1").unwrap_or(&request.path);
    let _ = match (request.method.as_str(), path) {
        ("POST", "/chat/completions") => {
            lock(&shared.traceparents).push(request.traceparent.clone());
            chat(&mut socket, &shared, &request.body).await
        }
        ("GET", "/models") => {
            let body = json!({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "chatstream"}
            ]});
            respond(&mut socket, 200, &body).await
        }
        (_, "/chat/completions" | "/models") => {
            respond_error(&mut socket, 405, "method not allowed").await
        }
        _ => respond_error(&mut socket, 404, "unknown path").await,
    };
    let _ = socket.shutdown().await;
}

async fn chat(socket: &mut TcpStream, shared: &Shared, body: &[u8]) -> std::io::Result<()> {
    let body: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return respond_error(
                socket,
                400,
                "We could not parse the JSON body of your request.",
            )
            .await
        }
    };
    lock(&shared.requests).push(body.clone());
    let behaviour = lock(&shared.behaviour).clone();
    let streamed = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let reply = Reply::new(shared, &body);
    match behaviour {
        Behaviour::Status(status, error) => respond(socket, status, &error).await,
        Behaviour::Stall => {
            write_sse_head(socket, shared.framing).await?;
            // Hold the connection open until the client goes away.
            let mut sink = [0u8; 1024];
            while socket.read(&mut sink).await? > 0 {}
            Ok(())
        }
        Behaviour::Answer(answer) if streamed => {
            reply.stream(socket, shared.framing, &answer, None).await
        }
        Behaviour::CutAfter(answer, n) if streamed => {
            reply.stream(socket, shared.framing, &answer, Some(n)).await
        }
        Behaviour::Answer(answer) => reply.whole(socket, &answer).await,
        Behaviour::CutAfter(..) => Ok(()),
        Behaviour::CallTool { name, then, .. }
            if last_role(&body) == Some("tool") || !offers_tool(&body, &name) =>
        {
            if streamed {
                reply.stream(socket, shared.framing, &then, None).await
            } else {
                reply.whole(socket, &then).await
            }
        }
        Behaviour::CallTool {
            name, arguments, ..
        } => {
            let call = json!({
                "id": format!("call_{}", shared.next_id.fetch_add(1, Ordering::Relaxed)),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            });
            if streamed {
                reply.stream_tool_call(socket, shared.framing, call).await
            } else {
                reply.whole_tool_call(socket, call).await
            }
        }
    }
}

/// True when the request's `tools` include the function `name`: a model calls only tools
/// it was offered.
fn offers_tool(body: &Value, name: &str) -> bool {
    body.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| {
            tools
                .iter()
                .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
        })
}

fn last_role(body: &Value) -> Option<&str> {
    body.get("messages")?
        .as_array()?
        .last()?
        .get("role")?
        .as_str()
}

/// What every chunk of one answer shares.
struct Reply {
    /// The server's count of answer tokens written to a client.
    streamed: Arc<std::sync::atomic::AtomicUsize>,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    prompt_tokens: usize,
    body: Value,
}

impl Reply {
    fn new(shared: &Shared, body: &Value) -> Self {
        let prompt_tokens = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .map(|m| content_text(m).split_whitespace().count())
                    .sum()
            })
            .unwrap_or(0);
        Self {
            streamed: shared.tokens_streamed.clone(),
            id: format!(
                "chatcmpl-fake-{}",
                shared.next_id.fetch_add(1, Ordering::Relaxed)
            ),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(MODEL)
                .to_owned(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            include_usage: body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            prompt_tokens,
            body: body.clone(),
        }
    }

    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": null, "logprobs": null, "finish_reason": finish_reason}],
        });
        chunk["choices"][0]["delta"] = delta;
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    async fn stream(
        &self,
        socket: &mut TcpStream,
        framing: Framing,
        answer: &Answer,
        cut_after: Option<usize>,
    ) -> std::io::Result<()> {
        let (tokens, finish_reason) = answer.tokens_for(&self.body);
        write_sse_head(socket, framing).await?;
        let first = self.chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        );
        write_event(socket, framing, &first.to_string()).await?;
        for (i, token) in tokens.iter().enumerate() {
            if cut_after == Some(i) {
                return Ok(()); // dropped without a finish reason, a final chunk or [DONE]
            }
            if !answer.delay_per_token.is_zero() {
                tokio::time::sleep(answer.delay_per_token).await;
            }
            let chunk = self.chunk(json!({"content": token}), None);
            write_event(socket, framing, &chunk.to_string()).await?;
            self.streamed.fetch_add(1, Ordering::SeqCst);
        }
        if cut_after.is_some() {
            return Ok(()); // asked to cut after all tokens: still no finish
        }
        write_event(
            socket,
            framing,
            &self.chunk(json!({}), Some(finish_reason)).to_string(),
        )
        .await?;
        if self.include_usage && answer.usage {
            let mut usage = self.chunk(json!({}), None);
            usage["choices"] = json!([]);
            usage["usage"] = self.usage(tokens.len());
            write_event(socket, framing, &usage.to_string()).await?;
        }
        write_event(socket, framing, "[DONE]").await?;
        if framing == Framing::Chunked {
            socket.write_all(b"0\r\n\r\n").await?;
        }
        socket.flush().await
    }

    /// Streams one tool call: its id and name first, the arguments in two pieces, then
    /// finish reason `tool_calls`.
    async fn stream_tool_call(
        &self,
        socket: &mut TcpStream,
        framing: Framing,
        call: Value,
    ) -> std::io::Result<()> {
        write_sse_head(socket, framing).await?;
        let arguments = call["function"]["arguments"].as_str().unwrap_or("");
        let cut = arguments
            .char_indices()
            .nth(arguments.chars().count() / 2)
            .map_or(arguments.len(), |(i, _)| i);
        let mut head = call.clone();
        head["index"] = json!(0);
        head["function"]["arguments"] = json!("");
        let first = json!({"role": "assistant", "content": null, "tool_calls": [head]});
        write_event(socket, framing, &self.chunk(first, None).to_string()).await?;
        for piece in [&arguments[..cut], &arguments[cut..]] {
            let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
            write_event(socket, framing, &self.chunk(delta, None).to_string()).await?;
        }
        let finish = self.chunk(json!({}), Some("tool_calls"));
        write_event(socket, framing, &finish.to_string()).await?;
        if self.include_usage {
            let mut usage = self.chunk(json!({}), None);
            usage["choices"] = json!([]);
            usage["usage"] = self.usage(1);
            write_event(socket, framing, &usage.to_string()).await?;
        }
        write_event(socket, framing, "[DONE]").await?;
        if framing == Framing::Chunked {
            socket.write_all(b"0\r\n\r\n").await?;
        }
        socket.flush().await
    }

    async fn whole_tool_call(&self, socket: &mut TcpStream, call: Value) -> std::io::Result<()> {
        let body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }],
            "usage": self.usage(1),
        });
        respond(socket, 200, &body).await
    }

    async fn whole(&self, socket: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
        let (tokens, finish_reason) = answer.tokens_for(&self.body);
        if !answer.delay_per_token.is_zero() {
            tokio::time::sleep(
                answer
                    .delay_per_token
                    .saturating_mul(u32::try_from(tokens.len()).unwrap_or(u32::MAX)),
            )
            .await;
        }
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": tokens.concat(), "refusal": null},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if answer.usage {
            body["usage"] = self.usage(tokens.len());
        }
        respond(socket, 200, &body).await
    }
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub(super) fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(content_text)
        .unwrap_or_default()
}

/// Words, each with the whitespace before it, so that they join back to `text`.
pub(super) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_space = true;
    for c in text.chars() {
        let space = c.is_whitespace();
        if space && !in_space && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        in_space = space;
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
