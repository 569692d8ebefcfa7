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
_LoggingHook). The channel (MessagePack codec and frames: _natsfn_wire.py,
next to this file) is read and written through its raw descriptor, without the
socket module.
"""

import importlib
import json
import os
import sys
import time

THIS_FILE = os.path.abspath(__file__)

# The channel (MessagePack codec, frame reading and writing) is in
# _natsfn_wire.py, next to this file: imported from our own directory, whatever
# sys.path[0] is (it is not this directory under PYTHONSAFEPATH, for one), and
# before main() puts the user's code on sys.path in place of this directory.
sys.path.insert(0, os.path.dirname(THIS_FILE))
try:
    import _natsfn_wire
finally:
    del sys.path[0]
from _natsfn_wire import (
    FrameTooLarge,
    ProtocolError,
    _open_channel,
    _read_frame,
    _send,
    _send_error,
    _send_response,
)

WIRE_FILE = _natsfn_wire.__file__


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
_OWN_FILES = (THIS_FILE, WIRE_FILE)  # the bootstrap's own code, in its two files


def _user_trace(tb):
    """Lambda-style stack trace: formatted frames, minus the leading frames of
    the bootstrap itself (and of importlib, for errors raised while importing)."""
    import traceback  # only now: most workers never format an error

    frames = traceback.extract_tb(tb)
    i = 0
    while i < len(frames):
        fn = frames[i].filename
        if fn not in _OWN_FILES and fn != _IMPORTLIB_FILE and not fn.startswith("<frozen importlib"):
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
    clock = time.time
    while True:
        frame = _read_frame(rf)
        if frame is None:
            return
        kind, f = frame
        if kind != "Invoke":
            continue  # unknown frame types are ignored (forward compatibility)
        rid = f.id
        _request_id = rid
        payload = f.payload
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
        timeout = f.timeout_ms
        deadline = int(clock() * 1000) + timeout if timeout else f.deadline_ms
        ctx = Context(rid, deadline, f.arn)
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
            _send_response(fd, rid, out, f.raw_id)
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
