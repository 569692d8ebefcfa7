"""natsfn Python worker bootstrap.

Loads an AWS Lambda style handler once, then serves invocations one at a time
over the framed MessagePack channel described in runtimes/README.md (a 4-byte
big-endian length, then a MessagePack map {frame_type: {fields}}), on the Unix
socket whose fd is in NATSFN_CHANNEL_FD. Standard library only.

Handler loading, the context object, error shapes and logging follow AWS
Lambda's Python runtime interface client (awslambdaric) closely, so that code
written for Lambda behaves the same here.

Start-up time counts (it is most of a cold start), so modules the bootstrap
needs only sometimes are imported when first needed: decimal and traceback on
the paths that use them, and logging when the user's code imports it (see
_LoggingHook). The channel is read and written through its raw descriptor,
without the socket module.
"""

import codecs
import importlib
import json
import os
import struct
import sys
import time

MAX_FRAME = 67_174_400  # 64 MiB + 64 KiB, from the contract
THIS_FILE = os.path.abspath(__file__)


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


def _send_response(fd, rid, out):
    """_send(fd, "Response", {"id": rid, "payload": out}) without the generic
    encoder: this is the one frame on the hot path."""
    n = len(out)
    if n < 0x100:
        bin_head = b"\xc4" + _u8.pack(n)
    elif n < 0x10000:
        bin_head = b"\xc5" + _u16.pack(n)
    else:
        bin_head = b"\xc6" + _u32.pack(n)
    parts = [b"", _RESPONSE_HEAD]
    _pack(rid, parts)
    parts.append(_PAYLOAD_KEY + bin_head)
    parts.append(out)
    _write(fd, parts)


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
    try:
        frame = unpackb(body)
        ((kind, fields),) = frame.items()
    except Exception as e:
        raise ProtocolError("malformed frame: %s" % e) from None
    return kind, fields if isinstance(fields, dict) else {}


# --------------------------------------------------------------------------
# Lambda compatibility: context, logging, errors, JSON
# --------------------------------------------------------------------------

_FUNCTION_NAME = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
_FUNCTION_VERSION = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
_LOG_GROUP = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
_LOG_STREAM = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
_MEMORY_MB = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")

_request_id = None  # of the invocation in progress (or the last one), for log lines


class CognitoIdentity:
    """As awslambdaric: present, with empty fields, when the caller sent no identity."""

    cognito_identity_id = None
    cognito_identity_pool_id = None


class LambdaContext:
    # Per-function values are class attributes: set once, not per invocation. An
    # ordinary object otherwise, as in awslambdaric: handlers may set attributes on it.
    function_name = _FUNCTION_NAME
    function_version = _FUNCTION_VERSION
    memory_limit_in_mb = _MEMORY_MB
    log_group_name = _LOG_GROUP
    log_stream_name = _LOG_STREAM
    identity = CognitoIdentity()
    client_context = None
    tenant_id = None

    def __init__(self, request_id, deadline_ms, arn):
        self.aws_request_id = request_id
        self._deadline_ms = deadline_ms
        self.invoked_function_arn = arn

    def get_remaining_time_in_millis(self):
        left = self._deadline_ms - int(time.time() * 1000)
        return left if left > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
            "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
            "invoked_function_arn=%s,client_context=None,identity=None])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
            )
        )


# Read before the user's code runs (which may change os.environ), as Lambda does.
_LOG_LEVEL = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()


def _setup_logging(logging):
    # As awslambdaric: UTC timestamps, "[LEVEL]\t<time>Z\t<request id>\t<msg>", and
    # the root level left at Python's default (WARNING) unless AWS_LAMBDA_LOG_LEVEL
    # says otherwise (TRACE maps to DEBUG).

    class _LambdaLogHandler(logging.Handler):
        """Root-logger handler writing Lambda's text log lines to (the current) stdout."""

        def emit(self, record):
            try:
                record.aws_request_id = _request_id or ""
                msg = self.format(record)
                if not msg.endswith("\n"):  # e.g. after exc_info text
                    msg += "\n"
                sys.stdout.write(msg)
            except Exception:
                self.handleError(record)

    logging.Formatter.converter = time.gmtime
    handler = _LambdaLogHandler()
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    level = "DEBUG" if _LOG_LEVEL == "TRACE" else _LOG_LEVEL
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


class _LoggingHook:
    """Lambda configures the root logger before the user's code runs. Importing
    logging costs several ms of every cold start, though, and many handlers never
    log: so this sys.meta_path entry (first in the list) waits for the first
    `import logging`, lets the other finders find the module as usual, and has it
    configured right after it has executed, before the importer gets it. Then it
    takes itself off sys.meta_path."""

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is not self and find_spec is not None:
                spec = find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        if hasattr(spec.loader, "exec_module"):
            spec.loader = _ConfigureAfterExec(self, spec)
        return spec


class _ConfigureAfterExec:
    """Stands in for the loader of logging just while the module is created and
    executed (then puts the real one back), and configures it after."""

    def __init__(self, hook, spec):
        self.hook = hook
        self.spec = spec
        self.loader = spec.loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.spec.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        try:
            sys.meta_path.remove(self.hook)
        except ValueError:
            return  # configured already (by an earlier import in another thread)
        _setup_logging(module)


def _prepare_logging():
    if "logging" in sys.modules:  # imported already (by a sitecustomize, say)
        _setup_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingHook())


class FaultException(Exception):
    """A runtime-detected failure with a Lambda error type (Runtime.*)."""

    def __init__(self, error_type, msg, trace=None):
        super().__init__(msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace or []


_IMPORTLIB_FILE = importlib.__file__


def _user_trace(tb):
    """Lambda-style stack trace: formatted frames, minus the leading frames of
    the bootstrap itself (and of importlib, for errors raised while importing)."""
    import traceback  # only now: most workers never format an error

    frames = traceback.extract_tb(tb)
    i = 0
    while i < len(frames):
        fn = frames[i].filename
        if fn != THIS_FILE and fn != _IMPORTLIB_FILE and not fn.startswith("<frozen importlib"):
            break
        i += 1
    return traceback.format_list(frames[i:])


def _error_fields(e):
    """(error_type, error_message, stack_trace) for an exception being handled."""
    if isinstance(e, FaultException):
        return e.error_type, e.msg, e.trace
    return type(e).__name__, str(e), _user_trace(e.__traceback__)


def _log_error(error_type, message, trace):
    # Lambda prints every reported error to the function's log as well.
    lines = ["[ERROR] %s: %s" % (error_type, message) if message else "[ERROR] " + error_type]
    if trace:
        lines.append("Traceback (most recent call last):")
        for t in trace:
            lines.extend(t.splitlines())
    try:
        sys.stdout.write("\n".join(lines) + "\n")
    except Exception:
        pass


def _json_default(o):
    # Lambda's encoder also serialises decimal.Decimal (e.g. DynamoDB numbers).
    # The bootstrap does not import decimal: a Decimal exists only once some code
    # has (directly, or through _decimal/_pydecimal, which decimal re-exports).
    decimal = sys.modules.get("decimal")
    if decimal is None and ("_decimal" in sys.modules or "_pydecimal" in sys.modules):
        import decimal
    if decimal is not None and isinstance(o, decimal.Decimal):
        if o.is_nan():
            return float("nan")
        if o.is_finite() and o == o.to_integral_value():
            return int(o)
        return float(o)
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_json_encode = json.JSONEncoder(ensure_ascii=False, default=_json_default).encode
_json_encode_ascii = json.JSONEncoder(default=_json_default).encode
_json_loads = json.loads


# --------------------------------------------------------------------------
# Handler loading (as awslambdaric's _get_handler)
# --------------------------------------------------------------------------


def _get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(
            "Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler, e)
        ) from None
    importname = modname.replace("/", ".")
    try:
        if importname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                "Runtime.BuiltInModuleConflict",
                "Cannot use built-in module %s as a handler module" % modname,
            )
        m = importlib.import_module(importname)
    except ImportError as e:
        raise FaultException(
            "Runtime.ImportModuleError",
            "Unable to import module '%s': %s" % (modname, e),
        ) from None
    except SyntaxError as e:
        raise FaultException(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s" % (modname, e),
            ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)],
        ) from None
    fn = getattr(m, fname, None)
    if fn is None:
        raise FaultException(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s'" % (fname, modname),
        )
    if not callable(fn):
        raise FaultException(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s': not callable" % (fname, modname),
        )
    return fn


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------


def _serve(fd, rf, handler):
    global _request_id
    loads = _json_loads
    encode = _json_encode
    Context = LambdaContext
    while True:
        frame = _read_frame(rf)
        if frame is None:
            return
        kind, f = frame
        if kind != "Invoke":
            continue  # unknown frame types are ignored (forward compatibility)
        rid = f.get("id") or ""
        _request_id = rid
        payload = f.get("payload")
        try:
            event = loads(payload) if payload else {}
        except Exception as e:
            _send(
                fd,
                "RequestError",
                {
                    "id": rid,
                    "error_type": "Runtime.UnmarshalError",
                    "error_message": "Unable to unmarshal input: %s" % e,
                    "stack_trace": [],
                },
            )
            continue
        # timeout_ms counts from now: the frame may have waited behind the one before.
        timeout = f.get("timeout_ms")
        deadline = int(time.time() * 1000) + timeout if timeout else f.get("deadline_ms") or 0
        ctx = Context(rid, deadline, f.get("invoked_function_arn"))
        try:
            result = handler(event, ctx)
            if type(result) is bytes:  # Lambda passes bytes through unencoded
                out = result
            else:
                try:
                    out = encode(result).encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates: keep them as \u escapes
                    out = _json_encode_ascii(result).encode("ascii")
                except Exception as e:
                    raise FaultException(
                        "Runtime.MarshalError", "Unable to marshal response: %s" % e
                    ) from None
        except Exception as e:
            etype, emsg, trace = _error_fields(e)
            _log_error(etype, emsg, trace)
            _send_error(
                fd,
                "Error",
                {"id": rid, "error_type": etype, "error_message": emsg, "stack_trace": trace},
            )
            continue
        try:
            _send_response(fd, rid, out)
        except FrameTooLarge:
            # Answer with an error (named as Lambda's service names it) rather
            # than break the channel.
            etype = "Function.ResponseSizeTooLarge"
            emsg = "Response payload size (%d bytes) exceeded maximum allowed payload size" % len(out)
            _log_error(etype, emsg, [])
            _send(fd, "Error", {"id": rid, "error_type": etype, "error_message": emsg, "stack_trace": []})


def main():
    fd, rf = _open_channel()
    _prepare_logging()

    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # The user's code comes first on sys.path, and our own directory (which
    # `python3 .../bootstrap.py` put at sys.path[0]) is not on it at all.
    if sys.path and sys.path[0] == os.path.dirname(THIS_FILE):
        sys.path[0] = task_root
    else:
        sys.path.insert(0, task_root)

    try:
        handler = _get_handler(os.environ.get("_HANDLER", ""))
    except Exception as e:
        etype, emsg, trace = _error_fields(e)
        _log_error(etype, emsg, trace)
        try:
            _send_error(
                fd,
                "InitError",
                {"error_type": etype, "error_message": emsg, "stack_trace": trace},
            )
        finally:
            sys.exit(1)
    _send(fd, "Ready", {})

    try:
        _serve(fd, rf, handler)
    except ProtocolError as e:
        sys.stderr.write("natsfn bootstrap: protocol error: %s\n" % e)
        sys.exit(1)
    except OSError as e:  # the dispatcher went away mid-write
        sys.stderr.write("natsfn bootstrap: channel error: %s\n" % e)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
