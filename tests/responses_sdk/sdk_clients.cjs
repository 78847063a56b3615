// What the Node SDK scripts share: the official SDK from SDK_NODE_DIR, a client of
// OPENAI_BASE_URL, and one of a second gateway instance (OPENAI_BASE_URL_2, when given),
// which serves the resumes, polls, cancels and continuations of responses created on the
// first.
'use strict';

const path = require('path');

const sdk = require(path.resolve(process.env.SDK_NODE_DIR, 'node_modules', 'openai'));
const OpenAI = sdk.OpenAI || sdk.default || sdk;
const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY || 'sk-test',
});
const other = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL_2 || process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY || 'sk-test',
});

// One line per check passed, which tests/responses_sdk.rs looks for.
const ok = (name) => console.log(`ok ${name}`);

module.exports = { OpenAI, client, other, ok };
