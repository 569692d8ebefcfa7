'use strict';
/*
 * natsfn Node.js worker bootstrap: the channel's MessagePack codec and frames.
 *
 * Part of bootstrap.js, in a file of its own only to keep each file short:
 * bootstrap.js requires it from its own directory. The frame format is
 * described in runtimes/README.md. It requires nothing (Buffer is a global).
 */

const MAX_FRAME = 67174400; // 64 MiB + 64 KiB, from the contract

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

module.exports = { MAX_FRAME, Utf8Bin, frame, errorFrame, mpDecode };
