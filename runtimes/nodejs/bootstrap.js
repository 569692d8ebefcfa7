'use strict';
/*
 * natsfn Node.js worker bootstrap.
 *
 * Loads an AWS Lambda style handler once, then serves invocations one at a
 * time over the framed MessagePack channel described in runtimes/README.md
 * (a 4-byte big-endian length, then a MessagePack map {frame_type: {fields}}),
 * on the Unix socket whose fd is in NATSFN_CHANNEL_FD. Built-in modules only.
 *
 * The programming model follows AWS Lambda's Node.js runtime interface client:
 * async handlers, callback handlers, context.succeed/fail/done,
 * callbackWaitsForEmptyEventLoop (via an unref()'d channel and 'beforeExit'),
 * Lambda's error shapes and its console log line format.
 */

const net = require('net');
const fs = require('fs');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');

const MAX_FRAME = 67174400; // 64 MiB + 64 KiB, from the contract
const EMPTY = Buffer.alloc(0);
const NOOP = () => {};

// ---------------------------------------------------------------------------
// MessagePack. Encoding is two-pass (size, then write into one buffer) so a
// frame costs a single allocation; bin values are Buffers/typed arrays, or a
// Utf8Bin (a string written as bin without an intermediate Buffer).
// ---------------------------------------------------------------------------

class Utf8Bin {
  constructor(s) {
    this.s = s;
    this.n = Buffer.byteLength(s, 'utf8');
  }
}

const isInt = (v) => Number.isInteger(v) && v >= -0x8000000000000000 && v < 0x10000000000000000;

function mpSize(v) {
  switch (typeof v) {
    case 'string': {
      const n = Buffer.byteLength(v, 'utf8');
      return n + (n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5);
    }
    case 'number':
      if (!isInt(v)) return 9;
      if (v >= 0) return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : v < 0x100000000 ? 5 : 9;
      return v >= -32 ? 1 : v >= -0x80 ? 2 : v >= -0x8000 ? 3 : v >= -0x80000000 ? 5 : 9;
    case 'boolean':
    case 'undefined':
      return 1;
    case 'bigint':
      return 9;
    case 'object': {
      if (v === null) return 1;
      if (v instanceof Utf8Bin || ArrayBuffer.isView(v)) {
        const n = v instanceof Utf8Bin ? v.n : v.byteLength;
        return n + (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5);
      }
      if (Array.isArray(v)) {
        let s = v.length < 16 ? 1 : v.length < 0x10000 ? 3 : 5;
        for (let i = 0; i < v.length; i++) s += mpSize(v[i]);
        return s;
      }
      const keys = Object.keys(v);
      let s = keys.length < 16 ? 1 : keys.length < 0x10000 ? 3 : 5;
      for (let i = 0; i < keys.length; i++) s += mpSize(keys[i]) + mpSize(v[keys[i]]);
      return s;
    }
  }
  throw new TypeError(`cannot MessagePack-encode a ${typeof v}`);
}

function mpLen(b, o, n, fix, fixMax, c8, c16, c32) {
  // Header of a str/bin/array/map of length n; fix == -1 when there is no fix form.
  if (fix >= 0 && n < fixMax) {
    b[o] = fix | n;
    return o + 1;
  }
  if (c8 >= 0 && n < 0x100) {
    b[o] = c8;
    b[o + 1] = n;
    return o + 2;
  }
  if (n < 0x10000) {
    b[o] = c16;
    b.writeUInt16BE(n, o + 1);
    return o + 3;
  }
  b[o] = c32;
  b.writeUInt32BE(n, o + 1);
  return o + 5;
}

function mpWrite(v, b, o) {
  switch (typeof v) {
    case 'string': {
      const n = Buffer.byteLength(v, 'utf8');
      o = mpLen(b, o, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
      return o + b.write(v, o, n, 'utf8');
    }
    case 'number':
      if (!isInt(v)) {
        b[o] = 0xcb;
        b.writeDoubleBE(v, o + 1);
        return o + 9;
      }
      if (v >= 0) {
        if (v < 0x80) { b[o] = v; return o + 1; }
        if (v < 0x100) { b[o] = 0xcc; b[o + 1] = v; return o + 2; }
        if (v < 0x10000) { b[o] = 0xcd; b.writeUInt16BE(v, o + 1); return o + 3; }
        if (v < 0x100000000) { b[o] = 0xce; b.writeUInt32BE(v, o + 1); return o + 5; }
        b[o] = 0xcf;
        b.writeBigUInt64BE(BigInt(v), o + 1);
        return o + 9;
      }
      if (v >= -32) { b[o] = v & 0xff; return o + 1; }
      if (v >= -0x80) { b[o] = 0xd0; b.writeInt8(v, o + 1); return o + 2; }
      if (v >= -0x8000) { b[o] = 0xd1; b.writeInt16BE(v, o + 1); return o + 3; }
      if (v >= -0x80000000) { b[o] = 0xd2; b.writeInt32BE(v, o + 1); return o + 5; }
      b[o] = 0xd3;
      b.writeBigInt64BE(BigInt(v), o + 1);
      return o + 9;
    case 'boolean':
      b[o] = v ? 0xc3 : 0xc2;
      return o + 1;
    case 'undefined':
      b[o] = 0xc0;
      return o + 1;
    case 'bigint':
      if (v >= 0n) {
        b[o] = 0xcf;
        b.writeBigUInt64BE(v, o + 1);
      } else {
        b[o] = 0xd3;
        b.writeBigInt64BE(v, o + 1);
      }
      return o + 9;
    case 'object': {
      if (v === null) {
        b[o] = 0xc0;
        return o + 1;
      }
      if (v instanceof Utf8Bin) {
        o = mpLen(b, o, v.n, -1, 0, 0xc4, 0xc5, 0xc6);
        return o + b.write(v.s, o, v.n, 'utf8');
      }
      if (ArrayBuffer.isView(v)) {
        o = mpLen(b, o, v.byteLength, -1, 0, 0xc4, 0xc5, 0xc6);
        b.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), o);
        return o + v.byteLength;
      }
      if (Array.isArray(v)) {
        o = mpLen(b, o, v.length, 0x90, 16, -1, 0xdc, 0xdd);
        for (let i = 0; i < v.length; i++) o = mpWrite(v[i], b, o);
        return o;
      }
      const keys = Object.keys(v);
      o = mpLen(b, o, keys.length, 0x80, 16, -1, 0xde, 0xdf);
      for (let i = 0; i < keys.length; i++) {
        o = mpWrite(keys[i], b, o);
        o = mpWrite(v[keys[i]], b, o);
      }
      return o;
    }
  }
  throw new TypeError(`cannot MessagePack-encode a ${typeof v}`);
}

/**
 * frame() for InitError/Error frames: one too big for the channel (a huge
 * message, say) is built again with its text cut down, instead of failing.
 */
function errorFrame(kind, fields) {
  try {
    return frame(kind, fields);
  } catch (_) {
    const cut = (t) => String(t).slice(0, 256 * 1024);
    fields.error_message = cut(fields.error_message) + ' [truncated]';
    fields.stack_trace = fields.stack_trace.slice(0, 100).map(cut);
    return frame(kind, fields);
  }
}

/** A complete frame (length prefix included) for {kind: fields}. */
function frame(kind, fields) {
  const msg = { [kind]: fields };
  const n = mpSize(msg);
  if (n > MAX_FRAME) throw new RangeError(`frame of ${n} bytes exceeds the channel limit`);
  const b = Buffer.allocUnsafe(4 + n);
  b.writeUInt32BE(n, 0);
  mpWrite(msg, b, 4);
  return b;
}

let P = 0; // decoder position (decoding is synchronous, so one shared cursor is enough)

function need(b, n) {
  if (P + n > b.length) throw new RangeError('truncated MessagePack data');
}
function rdStr(b, n) {
  need(b, n);
  const s = b.toString('utf8', P, P + n);
  P += n;
  return s;
}
function rdBin(b, n) {
  need(b, n);
  const s = b.subarray(P, P + n); // no copy: the frame buffer is ours alone
  P += n;
  return s;
}
function rdExt(b, n) {
  need(b, n + 1);
  const type = b.readInt8(P);
  P += 1;
  return { type, data: rdBin(b, n) };
}
function rdArr(b, n) {
  const a = new Array(n);
  for (let i = 0; i < n; i++) a[i] = rd(b);
  return a;
}
function rdMap(b, n) {
  const m = {};
  for (let i = 0; i < n; i++) {
    const k = rd(b);
    m[k] = rd(b);
  }
  return m;
}
function u64(hi, lo) {
  return hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

function rd(b) {
  const t = b[P++];
  if (t < 0x80) return t;
  if (t >= 0xe0) return t - 0x100;
  if (t >= 0xa0 && t < 0xc0) return rdStr(b, t & 0x1f);
  if (t >= 0x80 && t < 0x90) return rdMap(b, t & 0x0f);
  if (t >= 0x90 && t < 0xa0) return rdArr(b, t & 0x0f);
  let v;
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: need(b, 1); return rdBin(b, b[P++]);
    case 0xc5: v = b.readUInt16BE(P); P += 2; return rdBin(b, v);
    case 0xc6: v = b.readUInt32BE(P); P += 4; return rdBin(b, v);
    case 0xc7: need(b, 1); return rdExt(b, b[P++]);
    case 0xc8: v = b.readUInt16BE(P); P += 2; return rdExt(b, v);
    case 0xc9: v = b.readUInt32BE(P); P += 4; return rdExt(b, v);
    case 0xca: v = b.readFloatBE(P); P += 4; return v;
    case 0xcb: v = b.readDoubleBE(P); P += 8; return v;
    case 0xcc: need(b, 1); return b[P++];
    case 0xcd: v = b.readUInt16BE(P); P += 2; return v;
    case 0xce: v = b.readUInt32BE(P); P += 4; return v;
    case 0xcf: v = u64(b.readUInt32BE(P), b.readUInt32BE(P + 4)); P += 8; return v;
    case 0xd0: v = b.readInt8(P); P += 1; return v;
    case 0xd1: v = b.readInt16BE(P); P += 2; return v;
    case 0xd2: v = b.readInt32BE(P); P += 4; return v;
    case 0xd3:
      v = b.readBigInt64BE(P);
      P += 8;
      return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
    case 0xd4: return rdExt(b, 1);
    case 0xd5: return rdExt(b, 2);
    case 0xd6: return rdExt(b, 4);
    case 0xd7: return rdExt(b, 8);
    case 0xd8: return rdExt(b, 16);
    case 0xd9: need(b, 1); return rdStr(b, b[P++]);
    case 0xda: v = b.readUInt16BE(P); P += 2; return rdStr(b, v);
    case 0xdb: v = b.readUInt32BE(P); P += 4; return rdStr(b, v);
    case 0xdc: v = b.readUInt16BE(P); P += 2; return rdArr(b, v);
    case 0xdd: v = b.readUInt32BE(P); P += 4; return rdArr(b, v);
    case 0xde: v = b.readUInt16BE(P); P += 2; return rdMap(b, v);
    case 0xdf: v = b.readUInt32BE(P); P += 4; return rdMap(b, v);
  }
  throw new RangeError(`invalid MessagePack type byte ${t === undefined ? '(end of data)' : '0x' + t.toString(16)}`);
}

function mpDecode(b) {
  P = 0;
  const v = rd(b);
  if (P !== b.length) throw new RangeError('trailing bytes after MessagePack value');
  return v;
}

// ---------------------------------------------------------------------------
// Logging, as Lambda's LogPatch (text format): every console method writes
// "<ISO time>\t<request id>\t<LEVEL>\t<message>" to stdout; AWS_LAMBDA_LOG_LEVEL
// filters. The request id is undefined until the first invocation, as in Lambda.
// ---------------------------------------------------------------------------

let requestId;

function patchConsole() {
  const names = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];
  const min = Math.max(0, names.indexOf(String(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()));
  const logger = (level) =>
    names.indexOf(level) < min
      ? NOOP
      : (...args) => {
          process.stdout.write(`${new Date().toISOString()}\t${requestId}\t${level}\t${util.format(...args)}\n`);
        };
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = logger('INFO');
  console.log = console.info;
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

/** Lambda logs every reported error: "<label> \t{json of the error}". */
function logError(label, err) {
  try {
    const e = err instanceof Error ? err : new Error(err);
    let json;
    try {
      json = JSON.stringify(e, (_k, v) =>
        v instanceof Error
          ? Object.assign(
              { errorType: v.name, errorMessage: v.message, code: v.code },
              v,
              typeof v.stack === 'string' ? { stack: v.stack.split('\n') } : {},
            )
          : v,
      );
    } catch (_) {
      json = JSON.stringify({ errorType: e.name, errorMessage: e.message });
    }
    console.error(label, '\t' + json);
  } catch (_) {
    // logging must never turn one failure into another
  }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A runtime-detected failure with a Lambda error type (Runtime.*). */
class RuntimeError extends Error {
  constructor(type, message, trace) {
    super(message);
    // Not enumerable, so logged JSON shows only the usual error fields.
    Object.defineProperty(this, 'name', { value: type, writable: true, configurable: true });
    Object.defineProperty(this, 'trace', { value: trace || [], writable: true, configurable: true });
  }
}

/**
 * Stack frames of an Error's stack: the lines after the "Name: message" head,
 * trimmed, up to the first frame of this bootstrap (what lies below it is the
 * runtime's own dispatch machinery, not the user's code).
 */
function stackLines(stack) {
  if (typeof stack !== 'string') return [];
  const lines = stack.split('\n');
  let i = lines.findIndex((l) => /^\s*at /.test(l));
  if (i < 0) i = 1; // no frames recognised: just drop the head line
  const out = [];
  for (; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.includes(__filename)) break;
    if (t) out.push(t);
  }
  return out;
}

const isErrorLike = (o) =>
  o && typeof o.name === 'string' && o.name && typeof o.message === 'string' && o.message &&
  typeof o.stack === 'string' && o.stack;

/** error_type / error_message / stack_trace for anything a handler threw or reported. */
function errorFields(err) {
  try {
    if (err instanceof RuntimeError) {
      return { error_type: err.name, error_message: err.message, stack_trace: err.trace };
    }
    if (util.types.isNativeError(err) || isErrorLike(err)) {
      const type =
        typeof err.name === 'string' && err.name ? err.name : (err.constructor && err.constructor.name) || 'Error';
      return { error_type: type, error_message: String(err.message ?? ''), stack_trace: stackLines(err.stack) };
    }
    // As Lambda: a non-Error value is reported by its typeof ("string", "object", ...).
    return { error_type: typeof err, error_message: err.toString(), stack_trace: [] };
  } catch (_) {
    return {
      error_type: 'handled',
      error_message:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
      stack_trace: [],
    };
  }
}

// ---------------------------------------------------------------------------
// Handler loading (as Lambda's UserFunction.load)
// ---------------------------------------------------------------------------

const isFile = (p) => {
  try {
    return fs.statSync(p).isFile();
  } catch (_) {
    return false;
  }
};
const isDir = (p) => {
  try {
    return fs.statSync(p).isDirectory();
  } catch (_) {
    return false;
  }
};

/** Whether .js files in dir are ES modules (nearest package.json has "type": "module"). */
function isEsmScope(dir) {
  for (;;) {
    if (dir.endsWith('/node_modules')) return false;
    const pj = path.join(dir, 'package.json');
    if (isFile(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch (_) {
        return false;
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return false;
    dir = up;
  }
}

const importFile = (p) => import(pathToFileURL(p).href);

async function loadModule(root, moduleRoot, name) {
  const base = path.resolve(root, moduleRoot, name);
  if (isFile(base)) return require(base);
  if (isFile(base + '.js')) return isEsmScope(path.dirname(base)) ? importFile(base + '.js') : require(base + '.js');
  if (isFile(base + '.mjs')) return importFile(base + '.mjs');
  if (isFile(base + '.cjs')) return require(base + '.cjs');
  if (isDir(base)) return require(base); // index.js / package.json "main"
  // Last, node's own resolution (e.g. a package in node_modules), as Lambda does.
  return require(require.resolve(name, { paths: [root, path.resolve(root, moduleRoot)] }));
}

async function loadHandler(root, full) {
  if (full.includes('..')) {
    throw new RuntimeError(
      'Runtime.MalformedHandlerName',
      `Bad handler '${full}': '..' is not allowed; use paths relative to the task root`,
    );
  }
  const base = path.basename(full);
  const moduleRoot = full.slice(0, full.length - base.length);
  const m = /^([^.]*)\.(.*)$/.exec(base);
  if (!m) {
    throw new RuntimeError('Runtime.MalformedHandlerName', `Bad handler '${full}': expected <module>.<function>`);
  }
  const [, name, fnPath] = m;
  const modLabel = moduleRoot + name;
  let mod;
  try {
    mod = await loadModule(root, moduleRoot, name);
  } catch (e) {
    if (e instanceof SyntaxError) {
      const lines = String(e.stack || e).split('\n').map((l) => l.trimEnd()).filter(Boolean);
      throw new RuntimeError('Runtime.UserCodeSyntaxError', `Syntax error in module '${modLabel}': ${e.message}`, lines);
    }
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new RuntimeError(
        'Runtime.ImportModuleError',
        `Unable to import module '${modLabel}': ${String(e.message).split('\n')[0]}`,
        stackLines(e.stack),
      );
    }
    throw e;
  }
  const fn = fnPath.split('.').reduce((o, k) => o && o[k], mod);
  if (!fn) throw new RuntimeError('Runtime.HandlerNotFound', `${full} is undefined or not exported`);
  if (typeof fn !== 'function') throw new RuntimeError('Runtime.HandlerNotFound', `${full} is not a function`);
  return fn;
}

// ---------------------------------------------------------------------------
// Channel and invocations
// ---------------------------------------------------------------------------

const ENV = process.env;
const FUNCTION_NAME = ENV.AWS_LAMBDA_FUNCTION_NAME;
const FUNCTION_VERSION = ENV.AWS_LAMBDA_FUNCTION_VERSION;
const MEMORY_MB = ENV.AWS_LAMBDA_FUNCTION_MEMORY_SIZE; // a string, as in Lambda
const LOG_GROUP = ENV.AWS_LAMBDA_LOG_GROUP_NAME;
const LOG_STREAM = ENV.AWS_LAMBDA_LOG_STREAM_NAME;

let channel;
let handler;
let handlerIsAsync = false;
let ready = false; // Ready sent
let dying = false; // a fatal error is being reported; nothing else goes out
let eof = false; // the dispatcher closed the channel
let cur = null; // the invocation in progress: { id, sent }
const queue = []; // Invoke frames that arrived while busy (the dispatcher should not do that)

// Lambda's single 'beforeExit' hook: replaced per invocation, reset to NOOP when done.
let beforeExit = NOOP;

// Frames and exits wait until stdout/stderr have handed everything written so
// far to the OS, so the dispatcher reads an invocation's output before its result.
const afterOutputQueue = [];
function afterOutput(fn) {
  if (
    afterOutputQueue.length === 0 &&
    process.stdout.writableLength === 0 &&
    process.stderr.writableLength === 0
  ) {
    fn();
    return;
  }
  afterOutputQueue.push(fn);
  if (afterOutputQueue.length === 1) drainOutput();
}
function drainOutput() {
  let n = 2;
  const go = () => {
    if (--n > 0) return;
    // Output written while we waited must go first too.
    if (process.stdout.writableLength || process.stderr.writableLength) return drainOutput();
    for (const fn of afterOutputQueue.splice(0)) fn();
  };
  // A write's callback runs once everything queued before it is written.
  process.stdout.write('', go);
  process.stderr.write('', go);
}

function sendFrame(buf, cb) {
  afterOutput(() => channel.write(buf, cb));
}

function exitWhenFlushed(code) {
  afterOutput(() => {
    if (!channel || channel.writableLength === 0) process.exit(code);
    else channel.write(EMPTY, () => process.exit(code));
  });
}

function protocolError(msg) {
  process.stderr.write(`natsfn bootstrap: protocol error: ${msg}\n`);
  dying = true;
  exitWhenFlushed(1);
}

// Frame reassembly: small frames are decoded straight from the chunk they
// arrived in; a frame spanning chunks is gathered into one exact-size buffer.
const hdr = Buffer.alloc(4);
let hdrFill = 0;
let body = null;
let bodyFill = 0;

function onData(chunk) {
  let off = 0;
  const len = chunk.length;
  while (off < len && !dying) {
    if (body !== null) {
      const n = Math.min(body.length - bodyFill, len - off);
      chunk.copy(body, bodyFill, off, off + n);
      bodyFill += n;
      off += n;
      if (bodyFill === body.length) {
        const b = body;
        body = null;
        onFrame(b);
      }
      continue;
    }
    let size;
    if (hdrFill === 0 && len - off >= 4) {
      size = chunk.readUInt32BE(off);
      off += 4;
    } else {
      const n = Math.min(4 - hdrFill, len - off);
      chunk.copy(hdr, hdrFill, off, off + n);
      hdrFill += n;
      off += n;
      if (hdrFill < 4) return;
      hdrFill = 0;
      size = hdr.readUInt32BE(0);
    }
    if (size > MAX_FRAME) return protocolError(`frame length ${size} exceeds the limit`);
    if (len - off >= size) {
      onFrame(chunk.subarray(off, off + size));
      off += size;
    } else {
      body = Buffer.allocUnsafe(size);
      bodyFill = 0;
    }
  }
}

function onFrame(b) {
  let kind, fields;
  try {
    const msg = mpDecode(b);
    const keys = msg && typeof msg === 'object' ? Object.keys(msg) : [];
    if (keys.length !== 1) throw new Error('a frame is a map with exactly one entry');
    kind = keys[0];
    fields = msg[kind] || {};
  } catch (e) {
    return protocolError(`malformed frame: ${e.message}`);
  }
  if (kind !== 'Invoke') return; // unknown frame types are ignored (forward compatibility)
  if (cur !== null || queue.length) queue.push(fields);
  else invoke(fields);
}

function runQueued() {
  if (cur === null && queue.length && !dying) invoke(queue.shift());
}

function onEnd() {
  eof = true;
  if (cur === null) exitWhenFlushed(0);
  // else: exit once the current invocation has answered (see finish)
}

/** Report an invocation's outcome (first report wins) and get ready for the next. */
function finish(inv, buf) {
  if (inv.sent || dying) return;
  inv.sent = true;
  beforeExit = NOOP;
  channel.ref();
  sendFrame(buf);
  afterOutput(() => {
    if (cur === inv) cur = null;
    if (eof) exitWhenFlushed(0);
    else if (queue.length) setImmediate(runQueued);
  });
}

function resultFrame(id, result) {
  let json;
  try {
    json = JSON.stringify(result === undefined ? null : result);
  } catch (e) {
    const err = new RuntimeError('Runtime.MarshalError', `Unable to marshal response: ${e.message}`);
    logError('Invoke Error', err);
    return errorFrame('Error', Object.assign({ id }, errorFields(err)));
  }
  // JSON.stringify gives undefined for a function or symbol: Lambda answers null.
  const payload = new Utf8Bin(json === undefined ? 'null' : json);
  try {
    return frame('Response', { id, payload });
  } catch (_) {
    // Too big for a frame: answer with an error (named as Lambda's service
    // names it) rather than break the channel.
    const err = new RuntimeError(
      'Function.ResponseSizeTooLarge',
      `Response payload size (${payload.n} bytes) exceeded maximum allowed payload size`,
    );
    logError('Invoke Error', err);
    return errorFrame('Error', Object.assign({ id }, errorFields(err)));
  }
}

function invoke(f) {
  const id = typeof f.id === 'string' ? f.id : String(f.id ?? '');
  const inv = { id, sent: false };
  cur = inv;
  requestId = id;
  // While the handler runs the channel must not keep the process alive: the
  // event loop going empty ('beforeExit') is how callback-style completion
  // with callbackWaitsForEmptyEventLoop, and a forgotten callback, are detected.
  channel.unref();

  let event;
  const p = f.payload;
  try {
    event = p == null || p.length === 0 ? {} : JSON.parse(typeof p === 'string' ? p : p.toString('utf8'));
  } catch (e) {
    return finish(
      inv,
      frame('RequestError', {
        id,
        error_type: 'Runtime.UnmarshalError',
        error_message: `Unable to unmarshal input: ${e.message}`,
        stack_trace: [],
      }),
    );
  }

  // timeout_ms counts from now: the frame may have waited behind the one before it.
  const timeout = Number(f.timeout_ms) || 0;
  const deadline = timeout > 0 ? Date.now() + timeout : Number(f.deadline_ms) || 0;
  let waitForEmptyEventLoop = true;
  let finished = false; // the first of callback/succeed/fail/done wins, as in Lambda

  const sendResult = (result) => finish(inv, resultFrame(id, result));
  const sendError = (err) => {
    logError('Invoke Error', err);
    finish(inv, errorFrame('Error', Object.assign({ id }, errorFields(err))));
  };
  const callback = (err, result) => {
    if (finished) return;
    finished = true;
    beforeExit = NOOP;
    if (err !== undefined && err !== null) sendError(err);
    else if (!waitForEmptyEventLoop) sendResult(result);
    else beforeExit = () => setImmediate(() => sendResult(result));
  };
  const done = (err, result) => {
    if (finished) return;
    finished = true;
    beforeExit = NOOP;
    if (err !== undefined && err !== null) sendError(err);
    else sendResult(result);
  };

  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(v) {
      waitForEmptyEventLoop = v;
    },
    succeed: (result) => done(null, result),
    fail: (err) => done(err === undefined || err === null ? 'handled' : err, null),
    done,
    functionVersion: FUNCTION_VERSION,
    functionName: FUNCTION_NAME,
    memoryLimitInMB: MEMORY_MB,
    logGroupName: LOG_GROUP,
    logStreamName: LOG_STREAM,
    clientContext: undefined,
    identity: undefined,
    invokedFunctionArn: f.invoked_function_arn ?? undefined,
    awsRequestId: id,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };

  // The event loop emptied without the handler reporting anything: like Lambda,
  // a never-settling async handler is an error, a sync one answers null.
  beforeExit = () => {
    beforeExit = NOOP;
    finished = true;
    if (handlerIsAsync) {
      sendError(
        new RuntimeError(
          'Runtime.NodeJsExit',
          'The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a Promise that was never settled.',
        ),
      );
    } else {
      sendResult(null);
    }
  };

  try {
    const r = handler(event, context, callback);
    if (r && typeof r.then === 'function') r.then(context.succeed, context.fail);
  } catch (err) {
    callback(err);
  }
}

/** An uncaught exception or unhandled rejection: report it and exit(1). */
function fatal(label, err, fields) {
  if (dying) return;
  logError(label, err);
  beforeExit = NOOP;
  if (!ready) return initFailed(err, fields);
  dying = true;
  const inv = cur;
  if (inv !== null && !inv.sent) {
    inv.sent = true;
    sendFrame(errorFrame('Error', Object.assign({ id: inv.id }, fields || errorFields(err))));
  }
  exitWhenFlushed(1);
}

function initFailed(err, fields) {
  if (dying) return;
  dying = true;
  sendFrame(errorFrame('InitError', fields || errorFields(err)));
  exitWhenFlushed(1);
}

async function main() {
  patchConsole();
  const fd = Number(ENV.NATSFN_CHANNEL_FD);
  delete ENV.NATSFN_CHANNEL_FD; // not for the handler's child processes
  try {
    channel = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  } catch (e) {
    process.stderr.write(`natsfn bootstrap: cannot open channel fd ${fd}: ${e.message}\n`);
    process.exit(1);
  }
  channel.on('error', (e) => {
    if (!eof) process.stderr.write(`natsfn bootstrap: channel error: ${e.message}\n`);
    process.exit(eof ? 0 : 1);
  });

  process.on('uncaughtException', (err) => fatal('Uncaught Exception', err));
  process.on('unhandledRejection', (reason) => {
    let msg;
    try {
      msg = String(reason);
    } catch (_) {
      msg = typeof reason;
    }
    const err = new RuntimeError('Runtime.UnhandledPromiseRejection', msg);
    const trace = reason instanceof Error ? stackLines(reason.stack) : stackLines(err.stack);
    fatal('Unhandled Promise Rejection', err, { error_type: err.name, error_message: msg, stack_trace: trace });
  });
  process.on('beforeExit', () => beforeExit());

  try {
    handler = await loadHandler(ENV.LAMBDA_TASK_ROOT || process.cwd(), ENV._HANDLER || '');
  } catch (err) {
    logError('Init Error', err);
    return initFailed(err);
  }
  if (dying) return; // an asynchronous error during loading was already reported
  handlerIsAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
  ready = true;
  sendFrame(frame('Ready', {}));
  channel.on('data', onData);
  channel.on('end', onEnd);
}

main();
