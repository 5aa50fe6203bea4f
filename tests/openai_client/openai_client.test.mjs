// The official `openai` npm client (pinned in package-lock.json) against a running mlra-serve
// HTTP API (MLRA_BASE_URL, e.g. http://127.0.0.1:PORT/v1; the default CPU model with the chat
// template tests/data/chat_template.json). Run by run.sh with node's test runner.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.MLRA_BASE_URL, apiKey: 'unused', maxRetries: 0 });
const models = await client.models.list();
const model = models.data[0].id;
const prompt = 'Once upon a time';
const greedy = { model, temperature: 0, ignore_eos: true };

test('models lists the served model', () => {
  assert.equal(models.data.length, 1);
  assert.equal(models.data[0].object, 'model');
});

test('completions: plain', async () => {
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 8 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.prompt_tokens, 4);
  assert.equal(r.usage.total_tokens, 12);
});

test('completions: streamed text equals the plain text; usage last', async () => {
  const plain = await client.completions.create({ ...greedy, prompt, max_tokens: 12 });
  const stream = await client.completions.create({
    ...greedy, prompt, max_tokens: 12, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, plain.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 12);
});

test('completions: n = 2 with a seed gives two indexed choices', async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 6, n: 2, seed: 3, temperature: 1 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.usage.completion_tokens, 12);
});

test('completions: logprobs of the generated tokens', async () => {
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 5, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  for (const x of lp.token_logprobs) assert.ok(x <= 0);
  for (const top of lp.top_logprobs) assert.ok(Object.keys(top).length >= 2);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
});

test('completions: echo + logprobs with max_tokens 0 scores the prompt', async () => {
  const text = 'The quick brown fox jumps over the lazy dog';
  const r = await client.completions.create({ model, prompt: text, max_tokens: 0, echo: true, logprobs: 1 });
  const c = r.choices[0];
  assert.equal(c.text, text);
  assert.equal(c.logprobs.tokens.join(''), text);
  assert.equal(c.logprobs.token_logprobs[0], null);
  for (const x of c.logprobs.token_logprobs.slice(1)) assert.ok(typeof x === 'number' && x <= 0);
  assert.equal(r.usage.completion_tokens, 0);
  assert.equal(r.usage.prompt_tokens, c.logprobs.tokens.length);
});

test('completions: a stop string ends the text before it', async () => {
  const full = (await client.completions.create({ ...greedy, prompt, max_tokens: 16 })).choices[0].text;
  const stop = full.slice(6, 10);
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 16, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, full.slice(0, full.indexOf(stop)));
});

test('chat completions with the configured template, plain and streamed', async () => {
  const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me one.' }];
  const r = await client.chat.completions.create({ ...greedy, messages, max_tokens: 10 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  const stream = await client.chat.completions.create({ ...greedy, messages, max_tokens: 10, stream: true });
  let content = '';
  for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(content, r.choices[0].message.content);
});

test('errors come back as the client\'s typed errors', async () => {
  await assert.rejects(client.completions.create({ model, prompt, max_tokens: 8, temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'gpt-4', prompt, max_tokens: 8 }),
    (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.completions.create({ model, prompt: 'x'.repeat(20000), max_tokens: 8 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
});
