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

// The channel's MessagePack codec and frame building are in wire.js, next to this file.
const WIRE = path.join(__dirname, 'wire.js');
const { MAX_FRAME, Utf8Bin, frame, errorFrame, mpDecode } = require(WIRE);

const EMPTY = Buffer.alloc(0);
const NOOP = () => {};

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
 * trimmed, up to the first frame of this bootstrap, in bootstrap.js or wire.js
 * (what lies below it is the runtime's own dispatch machinery, not the user's
 * code).
 */
function stackLines(stack) {
  if (typeof stack !== 'string') return [];
  const lines = stack.split('\n');
  let i = lines.findIndex((l) => /^\s*at /.test(l));
  if (i < 0) i = 1; // no frames recognised: just drop the head line
  const out = [];
  for (; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.includes(__filename) || t.includes(WIRE)) break;
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
