// The official OpenAI Node SDK calling a client tool through chatstream's Responses API.
//
// Run by tests/responses_sdk.rs against an example whose model is the fake OpenAI server
// (it calls `get_weather` with {"city": "Paris"} when offered, and answers "It is sunny in
// Paris." once the tool's result is in), with SDK_NODE_DIR where `openai` is installed.
// Prints one `ok <check>` line per check; any failure throws (non-zero exit).
'use strict';

const assert = require('assert/strict');

const { client, other, ok } = require('./sdk_clients.cjs');
const MODEL = process.env.MODEL || 'fake-model';
const TOOLS = [
  {
    type: 'function',
    name: 'get_weather',
    description: 'The weather in a city.',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: false,
  },
];
const ANSWER = 'It is sunny in Paris.';

async function main() {
  // The model's call comes back as a function_call item.
  const r = await client.responses.create({ model: MODEL, input: 'Weather in Paris?', tools: TOOLS });
  assert.equal(r.status, 'completed');
  const calls = r.output.filter((i) => i.type === 'function_call');
  assert.equal(calls.length, 1, JSON.stringify(r.output));
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris' });
  assert.equal(r.output_text, '');
  const stored = await other.responses.retrieve(r.id);
  assert.deepEqual(stored.output, r.output);

  // The client answers with the tool's output; the conversation comes from the store.
  const r2 = await other.responses.create({
    model: MODEL,
    previous_response_id: r.id,
    tools: TOOLS,
    input: [{ type: 'function_call_output', call_id: calls[0].call_id, output: '{"temperature_c":21}' }],
  });
  assert.equal(r2.status, 'completed');
  assert.equal(r2.output_text, ANSWER);
  ok('tool call');

  // Streamed, through the helper: the argument deltas add up to the final item's.
  const stream = client.responses.stream({ model: MODEL, input: 'And now?', tools: TOOLS });
  let args = '';
  let doneArgs = null;
  stream.on('response.function_call_arguments.delta', (e) => {
    args += e.delta;
  });
  stream.on('response.function_call_arguments.done', (e) => {
    doneArgs = e.arguments;
  });
  const final = await stream.finalResponse();
  const items = final.output.filter((i) => i.type === 'function_call');
  assert.equal(items.length, 1);
  assert.equal(items[0].arguments, args);
  assert.equal(doneArgs, args);
  assert.deepEqual(JSON.parse(args), { city: 'Paris' });
  ok('tool call stream');

  // tool_choice "none": no tool is offered.
  const r3 = await client.responses.create({ model: MODEL, input: 'Weather?', tools: TOOLS, tool_choice: 'none' });
  assert.deepEqual(r3.output.map((i) => i.type), ['message']);
  assert.equal(r3.output_text, ANSWER);
  ok('tool choice none');
  if (process.env.CHECK_CHAT !== '1') return; // queue_worker's chat completions are seed 003's

  // The same round through chat completions (the SDK's runTools-free path).
  const chatTools = [{ type: 'function', function: { name: 'get_weather', parameters: TOOLS[0].parameters } }];
  const question = { role: 'user', content: 'Weather in Paris?' };
  const c = await client.chat.completions.create({ model: MODEL, messages: [question], tools: chatTools });
  assert.equal(c.choices[0].finish_reason, 'tool_calls');
  const call = c.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  const c2 = await client.chat.completions.create({
    model: MODEL,
    tools: chatTools,
    messages: [
      question,
      c.choices[0].message,
      { role: 'tool', tool_call_id: call.id, content: '{"temperature_c":21}' },
    ],
  });
  assert.equal(c2.choices[0].message.content, ANSWER);
  ok('chat tool call');
}

main().then(
  () => console.error('all node tool checks passed'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
