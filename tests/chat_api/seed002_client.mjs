// Seed 002's documented client loop, run from Node against the chat_api example.
//
// Everything between the two "seed 002" markers is copied unchanged from the seed document
// ("JavaScript/TypeScript Client"): fetch, the reader, `chunk.split('\n')`, `JSON.parse` of
// `data: ` lines, and its `handleEvent`. Around it, this file supplies what the document
// leaves to the page: the base URL for its relative `fetch` path, `token`, and the UI
// functions `handleEvent` calls, which record what they are given.
//
// Environment: BASE (http://127.0.0.1:PORT), TOKEN (bearer token), CONTENT (the message),
// THREAD_ID (optional: a thread to write to; otherwise one is created).
// Prints one JSON line: {threadId, appended, completed, errors, parseErrors, finished}.

const BASE = process.env.BASE;
const token = process.env.TOKEN;
const realFetch = globalThis.fetch;
// The document's client runs in a page, where `/chat/...` is relative to the page's origin.
globalThis.fetch = (url, init) => realFetch(new URL(url, BASE), init);

const seen = { appended: [], completed: [], errors: [], parseErrors: 0, finished: false };
function appendToMessage(content) { seen.appended.push(content); }
function completeMessage(accumulated) { seen.completed.push(accumulated); }
function showError(error) { seen.errors.push(error); }
function finishStream() { seen.finished = true; }
const realConsoleError = console.error;
console.error = (...args) => {
  if (String(args[0]).startsWith('Failed to parse SSE event')) seen.parseErrors += 1;
  realConsoleError(...args);
};

// ---- seed 002 client, unchanged: begin ----
async function sendStreamingMessage(threadId, content) {
  const response = await fetch(`/chat/threads/${threadId}/messages/stream`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'Authorization': 'Bearer ' + token
    },
    body: JSON.stringify({ content })
  });

  const reader = response.body.getReader();
  const decoder = new TextDecoder();

  while (true) {
    const { done, value } = await reader.read();
    if (done) break;

    const chunk = decoder.decode(value);
    const lines = chunk.split('\n');
    
    for (const line of lines) {
      if (line.startsWith('data: ')) {
        try {
          const event = JSON.parse(line.slice(6));
          handleEvent(event);
        } catch (e) {
          console.error('Failed to parse SSE event:', e);
        }
      }
    }
  }
}

function handleEvent(event) {
  switch (event.type) {
    case 'ai_response':
      if (event.data.isComplete) {
        completeMessage(event.data.accumulated);
      } else {
        appendToMessage(event.data.content);
      }
      break;
    case 'error':
      showError(event.data.error);
      break;
    case 'done':
      finishStream();
      break;
  }
}
// ---- seed 002 client, unchanged: end ----

async function main() {
  let threadId = process.env.THREAD_ID;
  if (!threadId) {
    const created = await fetch('/chat/threads', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token },
      body: JSON.stringify({ title: process.env.TITLE || 'Chat Title' }),
    });
    if (created.status !== 201) throw new Error('create thread: HTTP ' + created.status);
    threadId = (await created.json()).thread.id;
  }
  await sendStreamingMessage(threadId, process.env.CONTENT || 'Hello');
  console.log(JSON.stringify({ threadId, ...seen }));
}

main().catch((e) => { realConsoleError(e); process.exit(1); });
