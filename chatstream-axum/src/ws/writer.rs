//! The writing half of a connection: drains a bounded queue into the socket, each write
//! within a time limit, and on a cut sends only the last word.

use std::fmt::Display;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message};
use futures::{Sink, SinkExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// A close frame.
pub(super) fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

enum Sent {
    Done,
    Cut(Message),
    Failed(String),
}

/// Writes queued messages, each within `limit`; on a cut, drops the queue and sends only
/// the last word (an error frame) and a close.
pub(super) async fn write<W>(
    mut sink: W,
    mut queue: mpsc::Receiver<Message>,
    cut: oneshot::Receiver<Message>,
    limit: Duration,
) where
    W: Sink<Message> + Unpin,
    W::Error: Display,
{
    let mut cut = Some(cut);
    loop {
        let message = tokio::select! {
            biased;
            Some(last) = cut_signal(&mut cut) => return goodbye(&mut sink, last, limit).await,
            message = queue.recv() => match message {
                Some(m) => m,
                None => {
                    let _ = timeout(limit, sink.close()).await;
                    return;
                }
            },
        };
        let sent = tokio::select! {
            biased;
            // A failed pattern (the reader left without a cut) only disables this branch.
            Some(last) = cut_signal(&mut cut) => Sent::Cut(last),
            r = timeout(limit, sink.send(message)) => match r {
                Ok(Ok(())) => Sent::Done,
                Ok(Err(e)) => Sent::Failed(e.to_string()),
                Err(_) => Sent::Failed(format!("write stalled for {limit:?}")),
            },
        };
        match sent {
            Sent::Done => {}
            Sent::Cut(last) => return goodbye(&mut sink, last, limit).await,
            Sent::Failed(why) => {
                tracing::debug!(%why, "WebSocket write failed: dropping the connection");
                return;
            }
        }
    }
}

/// The cut-off message once the reader sends one; `None` once if the reader left without
/// one, then never again.
async fn cut_signal(cut: &mut Option<oneshot::Receiver<Message>>) -> Option<Message> {
    match cut {
        Some(rx) => {
            let last = rx.await.ok();
            *cut = None;
            last
        }
        None => std::future::pending().await,
    }
}

async fn goodbye<W>(sink: &mut W, last: Message, limit: Duration)
where
    W: Sink<Message> + Unpin,
{
    let _ = timeout(limit, async {
        sink.send(last).await?;
        sink.send(close(close_code::POLICY, "client too slow"))
            .await?;
        sink.close().await
    })
    .await;
}
