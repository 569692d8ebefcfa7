'use strict';
/*
 * The nodejs bootstrap's channel codec (wire.js) against the golden frames.
 *
 * protocol/tests/frames/golden.json (or NATSFN_GOLDEN_FRAMES) holds frames as the
 * node writes and reads them. The bootstrap reads every frame the node may send
 * (Invoke) as the golden bytes say; it writes every frame it sends (Ready,
 * InitError, Response, Error, RequestError) as exactly the golden bytes, with the
 * functions bootstrap.js builds them with; and its decoder reads back every canonical
 * frame. Run: node --test runtimes/nodejs/test/ (tests/it/golden_frames.rs runs it in
 * the integration tests). Node's own modules only.
 */

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { Utf8Bin, frame, errorFrame, mpDecode } = require('../wire.js');

const GOLDEN =
  process.env.NATSFN_GOLDEN_FRAMES ||
  path.join(__dirname, '..', '..', '..', 'protocol', 'tests', 'frames', 'golden.json');
const INVOKE_FIELDS = ['id', 'deadline_ms', 'timeout_ms', 'invoked_function_arn', 'payload'];

/** A golden meaning as JS values: {"$bin": hex} is a Buffer, key order kept. */
function value(meaning) {
  if (Array.isArray(meaning)) return meaning.map(value);
  if (meaning !== null && typeof meaning === 'object') {
    const keys = Object.keys(meaning);
    if (keys.length === 1 && keys[0] === '$bin') return Buffer.from(meaning.$bin, 'hex');
    const out = {};
    for (const k of keys) out[k] = value(meaning[k]);
    return out;
  }
  return meaning;
}

const VECTORS = JSON.parse(fs.readFileSync(GOLDEN, 'utf8')).vectors.map((v) => {
  const kind = Object.keys(v.frame)[0];
  return {
    name: v.name,
    toWorker: v.direction === 'to_worker',
    canonical: v.canonical,
    kind,
    fields: value(v.frame)[kind],
    bytes: Buffer.from(v.hex.replace(/\s+/g, ''), 'hex'),
  };
});

/** One frame's body, its length prefix checked. */
function body(v) {
  assert.equal(v.bytes.readUInt32BE(0), v.bytes.length - 4, `${v.name}: the length prefix`);
  return v.bytes.subarray(4);
}

/** Plain data for comparison: Buffers (and views of them) as Buffers. */
function plain(x) {
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  if (Array.isArray(x)) return x.map(plain);
  if (x !== null && typeof x === 'object') {
    const out = {};
    for (const k of Object.keys(x)) out[k] = plain(x[k]);
    return out;
  }
  return x;
}

test('there are vectors of both directions', () => {
  assert.ok(VECTORS.filter((v) => v.toWorker).length >= 5);
  assert.ok(VECTORS.filter((v) => !v.toWorker).length >= 5);
});

test('every Invoke frame is read as the golden fields', () => {
  for (const v of VECTORS.filter((v) => v.toWorker)) {
    const msg = mpDecode(body(v));
    // As bootstrap.js reads a frame: its one key, then the fields it knows.
    assert.deepEqual(Object.keys(msg), [v.kind], v.name);
    const fields = msg[v.kind];
    const read = {};
    for (const k of INVOKE_FIELDS) read[k] = plain(fields[k]);
    assert.deepEqual(read, v.fields, v.name);
  }
});

test('every frame the bootstrap sends is written as the golden bytes', () => {
  const sent = VECTORS.filter((v) => !v.toWorker && v.canonical);
  assert.deepEqual([...new Set(sent.map((v) => v.kind))].sort(), [
    'Error',
    'InitError',
    'Ready',
    'RequestError',
    'Response',
  ]);
  for (const v of sent) {
    // bootstrap.js: errorFrame for InitError and Error, frame for the others.
    const build = v.kind === 'InitError' || v.kind === 'Error' ? errorFrame : frame;
    const out = build(v.kind, { ...v.fields });
    assert.equal(out.toString('hex'), v.bytes.toString('hex'), v.name);
  }
});

test('a Response whose payload is JSON text (Utf8Bin, as bootstrap.js sends it) is the same frame', () => {
  const responses = VECTORS.filter((v) => v.kind === 'Response' && v.canonical);
  let text = 0;
  for (const v of responses) {
    const s = v.fields.payload.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(v.fields.payload)) continue; // not UTF-8
    const out = frame('Response', { id: v.fields.id, payload: new Utf8Bin(s) });
    assert.equal(out.toString('hex'), v.bytes.toString('hex'), v.name);
    text += 1;
  }
  assert.ok(text >= 2, 'Responses with a UTF-8 payload');
});

test('every canonical frame decodes to its meaning', () => {
  for (const v of VECTORS.filter((v) => v.canonical)) {
    assert.deepEqual(plain(mpDecode(body(v))), { [v.kind]: v.fields }, v.name);
  }
});
