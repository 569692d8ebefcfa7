"""natsfn Python worker bootstrap: the channel (MessagePack codec and frames).

Part of bootstrap.py, in a file of its own only to keep each file short:
bootstrap.py imports it from its own directory as the module _natsfn_wire (a
name no user module has) before it puts the user's code on sys.path. The frame
format is described in runtimes/README.md. Standard library only: codecs, os,
struct and sys (start-up time counts: import nothing more here).
"""

import codecs
import os
import struct
import sys

MAX_FRAME = 67_174_400  # 64 MiB + 64 KiB, from the contract

# --------------------------------------------------------------------------
# MessagePack (the subset of the spec the channel can carry: everything but
# ext, which is decoded to a (type, bytes) tuple so unknown fields can be
# skipped, and never encoded)
# --------------------------------------------------------------------------

_u8 = struct.Struct(">B")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i8 = struct.Struct(">b")
_i16 = struct.Struct(">h")
_i32 = struct.Struct(">i")
_i64 = struct.Struct(">q")
_f32 = struct.Struct(">f")
_f64 = struct.Struct(">d")
_hdr = _u32.pack

# Frame strings must be valid UTF-8: a lone surrogate becomes U+FFFD (as in Node).
codecs.register_error("natsfn.fffd", lambda e: (b"\xef\xbf\xbd" * (e.end - e.start), e.end))


def _pack(o, out):
    """Append the MessagePack encoding of o to the list out (joined once later)."""
    t = type(o)
    if t is str:
        b = o.encode("utf-8", "natsfn.fffd")
        n = len(b)
        if n < 32:
            out.append(_u8.pack(0xA0 | n))
        elif n < 0x100:
            out.append(b"\xd9" + _u8.pack(n))
        elif n < 0x10000:
            out.append(b"\xda" + _u16.pack(n))
        else:
            out.append(b"\xdb" + _u32.pack(n))
        out.append(b)
    elif t is bytes or t is bytearray or t is memoryview:
        n = len(o) if t is not memoryview else o.nbytes
        if n < 0x100:
            out.append(b"\xc4" + _u8.pack(n))
        elif n < 0x10000:
            out.append(b"\xc5" + _u16.pack(n))
        else:
            out.append(b"\xc6" + _u32.pack(n))
        out.append(o)
    elif o is None:
        out.append(b"\xc0")
    elif o is True:
        out.append(b"\xc3")
    elif o is False:
        out.append(b"\xc2")
    elif isinstance(o, int):
        if 0 <= o < 0x80:
            out.append(_u8.pack(o))
        elif o >= 0:
            if o < 0x100:
                out.append(b"\xcc" + _u8.pack(o))
            elif o < 0x10000:
                out.append(b"\xcd" + _u16.pack(o))
            elif o < 0x100000000:
                out.append(b"\xce" + _u32.pack(o))
            else:
                out.append(b"\xcf" + _u64.pack(o))  # raises beyond 2**64
        elif o >= -32:
            out.append(_u8.pack(o & 0xFF))
        elif o >= -0x80:
            out.append(b"\xd0" + _i8.pack(o))
        elif o >= -0x8000:
            out.append(b"\xd1" + _i16.pack(o))
        elif o >= -0x80000000:
            out.append(b"\xd2" + _i32.pack(o))
        else:
            out.append(b"\xd3" + _i64.pack(o))
    elif isinstance(o, float):
        out.append(b"\xcb" + _f64.pack(o))
    elif isinstance(o, str):
        _pack(str(o), out)
    elif isinstance(o, dict):
        n = len(o)
        if n < 16:
            out.append(_u8.pack(0x80 | n))
        elif n < 0x10000:
            out.append(b"\xde" + _u16.pack(n))
        else:
            out.append(b"\xdf" + _u32.pack(n))
        for k, v in o.items():
            _pack(k, out)
            _pack(v, out)
    elif isinstance(o, (list, tuple)):
        n = len(o)
        if n < 16:
            out.append(_u8.pack(0x90 | n))
        elif n < 0x10000:
            out.append(b"\xdc" + _u16.pack(n))
        else:
            out.append(b"\xdd" + _u32.pack(n))
        for v in o:
            _pack(v, out)
    else:
        raise TypeError("cannot MessagePack-encode %s" % t.__name__)


def _raw(data, i, n):
    """The n bytes at data[i:], checked (slicing alone would silently truncate)."""
    j = i + n
    if j > len(data):
        raise ValueError("truncated MessagePack data")
    return j


def _unpack(data, mv, i):
    """Decode one value at data[i]; returns (value, next index). The type tests
    come roughly in order of frequency in Invoke frames."""
    b = data[i]
    i += 1
    if b >= 0xA0 and b < 0xC0:  # fixstr
        j = _raw(data, i, b & 0x1F)
        return str(mv[i:j], "utf-8"), j
    if b < 0x80:  # positive fixint
        return b, i
    if b < 0x90:  # fixmap
        return _unpack_map(data, mv, i, b & 0x0F)
    if b == 0xD9:  # str8
        j = _raw(data, i + 1, data[i])
        return str(mv[i + 1 : j], "utf-8"), j
    if b == 0xC4:  # bin8
        j = _raw(data, i + 1, data[i])
        return data[i + 1 : j], j
    if b == 0xCF:
        return _u64.unpack_from(data, i)[0], i + 8
    if b < 0xA0:  # fixarray
        return _unpack_array(data, mv, i, b & 0x0F)
    if b >= 0xE0:  # negative fixint
        return b - 0x100, i
    if b == 0xC0:
        return None, i
    if b == 0xC2:
        return False, i
    if b == 0xC3:
        return True, i
    if b == 0xC5 or b == 0xC6:  # bin 16/32
        if b == 0xC5:
            n, i = _u16.unpack_from(data, i)[0], i + 2
        else:
            n, i = _u32.unpack_from(data, i)[0], i + 4
        j = _raw(data, i, n)
        return data[i:j], j
    if b == 0xDA or b == 0xDB:  # str 16/32
        if b == 0xDA:
            n, i = _u16.unpack_from(data, i)[0], i + 2
        else:
            n, i = _u32.unpack_from(data, i)[0], i + 4
        j = _raw(data, i, n)
        return str(mv[i:j], "utf-8"), j
    if b == 0xCC:
        return data[i], i + 1
    if b == 0xCD:
        return _u16.unpack_from(data, i)[0], i + 2
    if b == 0xCE:
        return _u32.unpack_from(data, i)[0], i + 4
    if b == 0xD0:
        return _i8.unpack_from(data, i)[0], i + 1
    if b == 0xD1:
        return _i16.unpack_from(data, i)[0], i + 2
    if b == 0xD2:
        return _i32.unpack_from(data, i)[0], i + 4
    if b == 0xD3:
        return _i64.unpack_from(data, i)[0], i + 8
    if b == 0xCA:
        return _f32.unpack_from(data, i)[0], i + 4
    if b == 0xCB:
        return _f64.unpack_from(data, i)[0], i + 8
    if b == 0xDC:
        return _unpack_array(data, mv, i + 2, _u16.unpack_from(data, i)[0])
    if b == 0xDD:
        return _unpack_array(data, mv, i + 4, _u32.unpack_from(data, i)[0])
    if b == 0xDE:
        return _unpack_map(data, mv, i + 2, _u16.unpack_from(data, i)[0])
    if b == 0xDF:
        return _unpack_map(data, mv, i + 4, _u32.unpack_from(data, i)[0])
    if b >= 0xD4 and b <= 0xD8:  # fixext 1/2/4/8/16
        n = 1 << (b - 0xD4)
        j = _raw(data, i + 1, n)
        return (_i8.unpack_from(data, i)[0], data[i + 1 : j]), j
    if b == 0xC7 or b == 0xC8 or b == 0xC9:  # ext 8/16/32
        if b == 0xC7:
            n, i = data[i], i + 1
        elif b == 0xC8:
            n, i = _u16.unpack_from(data, i)[0], i + 2
        else:
            n, i = _u32.unpack_from(data, i)[0], i + 4
        j = _raw(data, i + 1, n)
        return (_i8.unpack_from(data, i)[0], data[i + 1 : j]), j
    raise ValueError("invalid MessagePack type byte 0x%02x" % b)


def _unpack_array(data, mv, i, n):
    a = []
    for _ in range(n):
        v, i = _unpack(data, mv, i)
        a.append(v)
    return a, i


def _unpack_map(data, mv, i, n):
    m = {}
    for _ in range(n):
        k, i = _unpack(data, mv, i)
        v, i = _unpack(data, mv, i)
        m[k] = v
    return m, i


# The Invoke frame as the dispatcher writes it: {"Invoke": {five fields, in this order}}.
_INVOKE_HEAD = b"\x81\xa6Invoke\x85\xa2id"
_DEADLINE_KEY = b"\xabdeadline_ms"
_TIMEOUT_KEY = b"\xaatimeout_ms"
_ARN_KEY = b"\xb4invoked_function_arn"


class Invoke:
    """One Invoke frame's fields. `raw_id` is the id as the frame encoded it, for the
    Response frame to reuse."""

    __slots__ = ("id", "deadline_ms", "timeout_ms", "arn", "payload", "raw_id")

    def __init__(self, rid, deadline_ms, timeout_ms, arn, payload, raw_id=None):
        self.id = rid
        self.deadline_ms = deadline_ms
        self.timeout_ms = timeout_ms
        self.arn = arn
        self.payload = payload
        self.raw_id = raw_id


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_UINT_STRUCT = {1: _u8, 2: _u16, 4: _u32, 8: _u64}
_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}
# What follows the deadline, from "timeout_ms" to the payload's key: the same in every
# frame a worker gets (its timeout and ARN are fixed), so it is checked by one
# comparison once seen.
_tail_seen = None


def _uint(data, i):
    """(value, next index) of the unsigned int at data[i]; ValueError if it is none."""
    b = data[i]
    if b < 0x80:
        return b, i + 1
    w = _UINT_WIDTH[b]  # KeyError for anything else
    return _UINT_STRUCT[w].unpack_from(data, i + 1)[0], i + 1 + w


def _invoke_fields(data):
    """The Invoke frame written in the dispatcher's own layout, decoded in one pass
    (this runs once per invocation; the generic decoder takes three times as long);
    None for any other shape, which the generic decoder then reads."""
    global _tail_seen
    if not data.startswith(_INVOKE_HEAD):
        return None
    try:
        i = len(_INVOKE_HEAD)
        b = data[i]
        if 0xA0 <= b <= 0xBF:
            n, j = b & 0x1F, i + 1
        elif b == 0xD9:
            n, j = data[i + 1], i + 2
        else:
            return None
        k = j + n
        raw_id = data[i:k]
        rid = str(data[j:k], "utf-8")
        if not data.startswith(_DEADLINE_KEY, k):
            return None
        deadline, i = _uint(data, k + len(_DEADLINE_KEY))
        tail = _tail_seen
        if tail is not None and data.startswith(tail[0], i):
            timeout, arn = tail[1], tail[2]
            i += len(tail[0])
        else:
            start = i
            if not data.startswith(_TIMEOUT_KEY, i):
                return None
            timeout, i = _uint(data, i + len(_TIMEOUT_KEY))
            if not data.startswith(_ARN_KEY, i):
                return None
            i += len(_ARN_KEY)
            b = data[i]
            if 0xA0 <= b <= 0xBF:
                n, j = b & 0x1F, i + 1
            elif b == 0xD9:
                n, j = data[i + 1], i + 2
            else:
                return None
            i = _raw(data, j, n)
            arn = str(data[j:i], "utf-8")
            if not data.startswith(_PAYLOAD_KEY, i):
                return None
            i += len(_PAYLOAD_KEY)
            _tail_seen = (data[start:i], timeout, arn)
        w = _BIN_WIDTH[data[i]]
        n = _UINT_STRUCT[w].unpack_from(data, i + 1)[0]
        i += 1 + w
        if i + n != len(data) or k > len(data):
            return None
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, struct.error):
        return None
    return Invoke(rid, deadline, timeout, arn, data[i:], raw_id)


def unpackb(data):
    v, i = _unpack(data, memoryview(data), 0)
    if i != len(data):
        raise ValueError("trailing bytes after MessagePack value")
    return v


# --------------------------------------------------------------------------
# Channel
# --------------------------------------------------------------------------


class ProtocolError(Exception):
    pass


def _open_channel():
    """(fd, buffered reader) of the channel. The fd is written with os.write."""
    fd = int(os.environ.pop("NATSFN_CHANNEL_FD"))
    # Keep the channel out of processes the handler spawns: a leaked copy would
    # hide this worker's exit (EOF) from the dispatcher.
    os.set_inheritable(fd, False)
    # Like socket.makefile("rb"): read(n) returns n bytes, or fewer only at EOF.
    return fd, open(fd, "rb", buffering=65536, closefd=False)


class FrameTooLarge(ProtocolError):
    pass


def _write(fd, parts):
    """Send a frame whose body is parts[1:]; parts[0] is the length prefix's
    slot. stdout/stderr are flushed first: the contract wants an invocation's
    output to reach the dispatcher before its result."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    size = sum(map(len, parts))
    if size > MAX_FRAME:
        raise FrameTooLarge("frame of %d bytes exceeds the channel limit" % size)
    parts[0] = _hdr(size)
    data = b"".join(parts)
    n = os.write(fd, data)
    if n < len(data):  # a partial write (e.g. a big frame interrupted by a signal)
        view = memoryview(data)
        while n < len(data):
            n += os.write(fd, view[n:])


def _send(fd, kind, fields):
    parts = [b""]
    _pack({kind: fields}, parts)
    _write(fd, parts)


_TRUNCATE = 256 * 1024


def _send_error(fd, kind, fields):
    """_send for InitError/Error frames: one too big for the channel (a huge
    message, say) is sent again with its text cut down, instead of failing."""
    try:
        _send(fd, kind, fields)
    except FrameTooLarge:
        fields["error_message"] = fields["error_message"][:_TRUNCATE] + " [truncated]"
        fields["stack_trace"] = [t[:_TRUNCATE] for t in fields["stack_trace"][:100]]
        _send(fd, kind, fields)


_RESPONSE_HEAD = b"\x81\xa8Response\x82\xa2id"  # {"Response": {"id": ...
_PAYLOAD_KEY = b"\xa7payload"
_RESPONSE_HEAD_LEN = len(_RESPONSE_HEAD)
_PAYLOAD_KEY_LEN = len(_PAYLOAD_KEY)


def _send_response(fd, rid, out, raw_id=None):
    """_send(fd, "Response", {"id": rid, "payload": out}) without the generic
    encoder: this is the one frame on the hot path. `raw_id` is the id already
    MessagePack-encoded (as the Invoke frame had it)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    if raw_id is None:
        parts = []
        _pack(rid, parts)
        raw_id = b"".join(parts)
    n = len(out)
    if n < 0x100:
        bin_head = b"\xc4" + _u8.pack(n)
    elif n < 0x10000:
        bin_head = b"\xc5" + _u16.pack(n)
    else:
        bin_head = b"\xc6" + _u32.pack(n)
    size = _RESPONSE_HEAD_LEN + len(raw_id) + _PAYLOAD_KEY_LEN + len(bin_head) + n
    if size > MAX_FRAME:
        raise FrameTooLarge("frame of %d bytes exceeds the channel limit" % size)
    data = b"".join((_hdr(size), _RESPONSE_HEAD, raw_id, _PAYLOAD_KEY, bin_head, out))
    n = os.write(fd, data)
    if n < len(data):  # a partial write (e.g. a big frame interrupted by a signal)
        view = memoryview(data)
        while n < len(data):
            n += os.write(fd, view[n:])


def _read_frame(rf):
    """Next frame as (type, fields), or None at a clean end-of-file."""
    h = rf.read(4)
    if len(h) < 4:
        if not h:
            return None
        raise ProtocolError("channel closed inside a frame header")
    n = _u32.unpack(h)[0]
    if n > MAX_FRAME:
        raise ProtocolError("frame length %d exceeds the limit" % n)
    body = rf.read(n)
    if len(body) < n:
        raise ProtocolError("channel closed inside a frame body")
    invoke = _invoke_fields(body)
    if invoke is not None:
        return "Invoke", invoke
    try:
        frame = unpackb(body)
        ((kind, fields),) = frame.items()
    except Exception as e:
        raise ProtocolError("malformed frame: %s" % e) from None
    if not isinstance(fields, dict):
        fields = {}
    if kind == "Invoke":
        # Another layout of the same frame (fields in another order, say).
        return kind, Invoke(
            fields.get("id") or "",
            fields.get("deadline_ms") or 0,
            fields.get("timeout_ms"),
            fields.get("invoked_function_arn"),
            fields.get("payload"),
        )
    return kind, fields
