// The official OpenAI Node SDK, unchanged, against chatstream's Responses API.
//
// Run by tests/responses_sdk.rs with OPENAI_BASE_URL pointing at a running example and
// SDK_NODE_DIR at the directory `npm install --prefix <dir> openai` filled. Prints one
// `ok <check>` line per check; any failure throws (non-zero exit).
'use strict';

const assert = require('assert/strict');

const { OpenAI, client, other, ok } = require('./sdk_clients.cjs');

const MODEL = process.env.MODEL || 'scripted';

async function waitFinal(id) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const r = await other.responses.retrieve(id);
    if (r.status !== 'queued' && r.status !== 'in_progress') return r;
    assert.ok(Date.now() < deadline, `${id} still ${r.status}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function expectStatus(promise, status, check) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.status, status, String(e));
    if (check) check(e);
    return;
  }
  assert.fail(`expected an error with status ${status}`);
}

async function main() {
  // responses.create, plain
  const r = await client.responses.create({ model: MODEL, input: 'hello', instructions: 'be kind' });
  assert.equal(r.status, 'completed');
  assert.ok(r.id.startsWith('resp_'));
  assert.ok(r.output_text.length > 0);
  ok('create');

  // responses.create, streamed
  const events = [];
  for await (const e of await client.responses.create({ model: MODEL, input: 'stream me', stream: true })) {
    events.push(e);
  }
  assert.deepEqual(events.slice(0, 2).map((e) => e.type), ['response.created', 'response.in_progress']);
  const last = events[events.length - 1];
  assert.equal(last.type, 'response.completed');
  const numbers = events.map((e) => e.sequence_number);
  assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
  const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  assert.equal(text, last.response.output[0].content[0].text);
  ok('create stream');

  // the responses.stream helper
  const helper = client.responses.stream({ model: MODEL, input: 'helper' });
  let deltas = '';
  helper.on('response.output_text.delta', (e) => { deltas += e.delta; });
  const final = await helper.finalResponse();
  assert.equal(final.status, 'completed');
  assert.equal(final.output_text, deltas);
  ok('stream helper');

  // previous_response_id
  const r2 = await client.responses.create({ model: MODEL, input: 'and again', previous_response_id: r.id });
  assert.equal(r2.previous_response_id, r.id);
  assert.equal(r2.status, 'completed');
  const items = await client.responses.inputItems.list(r2.id);
  assert.equal(items.data[0].content[0].text, 'and again');
  ok('previous_response_id');

  // background, a dropped connection, then retrieve with stream and starting_after
  const bg = await client.responses.create({ model: MODEL, input: 'background', background: true });
  assert.equal(bg.status, 'queued');
  let seen = '';
  let after = null;
  const first = await client.responses.retrieve(bg.id, { stream: true });
  for await (const e of first) {
    after = e.sequence_number;
    if (e.type === 'response.output_text.delta') {
      seen += e.delta;
      if (seen.length > 5) break; // breaking out drops the connection
    }
  }
  const rest = [];
  for await (const e of await other.responses.retrieve(bg.id, { stream: true, starting_after: after })) {
    rest.push(e);
  }
  assert.ok(rest[0].sequence_number > after);
  seen += rest.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  const stored = await waitFinal(bg.id);
  assert.equal(stored.status, 'completed');
  assert.equal(seen, stored.output_text);
  ok('background resume');

  // cancel
  const bg2 = await client.responses.create({ model: MODEL, input: 'cancel me', background: true });
  for await (const e of await client.responses.retrieve(bg2.id, { stream: true })) {
    if (e.type === 'response.output_text.delta') break;
  }
  const c = await other.responses.cancel(bg2.id);
  assert.equal(c.status, 'cancelled');
  assert.ok(c.output_text.length > 0);
  assert.ok(c.usage.output_tokens > 0);
  const unchanged = await client.responses.cancel(r.id);
  assert.equal(unchanged.status, 'completed');
  ok('cancel');

  // delete
  await client.responses.delete(r2.id);
  await expectStatus(client.responses.retrieve(r2.id), 404);
  ok('delete');

  // error mapping
  await expectStatus(client.responses.create({ model: MODEL, input: [{ type: 'bogus_item' }] }), 400, (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.param, 'input[0].type');
  });
  await expectStatus(client.responses.retrieve('resp_unknown'), 404, (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
  });
  await expectStatus(client.responses.create({ model: MODEL, input: 'x'.repeat(200000) }), 413);
  if (process.env.CHECK_AUTH === '1') {
    const bad = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: 'wrong-key' });
    await expectStatus(bad.responses.create({ model: MODEL, input: 'x' }), 401, (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
    });
    const mine = await client.responses.create({ model: MODEL, input: 'mine' });
    const stranger = new OpenAI({
      baseURL: process.env.OPENAI_BASE_URL,
      apiKey: process.env.OPENAI_API_KEY_OTHER_USER,
    });
    await expectStatus(stranger.responses.retrieve(mine.id), 404);
    await expectStatus(stranger.responses.delete(mine.id), 404);
    assert.equal((await client.responses.retrieve(mine.id)).output_text, mine.output_text);
    ok('auth');
  }
  ok('errors');
}

main().then(
  () => console.error('all node checks passed'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
