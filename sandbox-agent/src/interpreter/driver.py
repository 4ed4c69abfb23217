# The agent's Python driver: one per session, runs user code like a Jupyter kernel.
#
# Started by the agent as `python3 -I -u -B -c <this> <nonce>` with:
#   fd 0: requests from the agent, fd 3: results to the agent (frames: 4-byte big-endian length +
#   UTF-8 JSON), fd 1/2: the real stdout/stderr pipes of the user code (and of its children).
# After each execution the driver writes a marker `\x1e<nonce>:<seq>\x1e` to fd 1 and fd 2 so the
# agent knows it has read every byte the execution printed.
import ast
import base64
import builtins
import io
import json
import linecache
import os
import signal
import struct
import sys
import traceback
import warnings

_NONCE = sys.argv[1].encode()
_MAIN_PID = os.getpid()

# Keep the control channel away from user code's stdin and from child processes (os.dup makes
# non-inheritable descriptors); user code reading stdin gets EOF.
_REQ = os.dup(0)
_RES = os.dup(3)
os.close(3)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
sys.argv = [""]

# Agg never opens a window; plt.show() is a no-op there and must not warn about it.
warnings.filterwarnings("ignore", message=".*non-GUI backend.*")
warnings.filterwarnings("ignore", message=".*FigureCanvasAgg is non-interactive.*")

_executing = False


def _on_sigint(signum, frame):
    # Interrupts are for user code only; one that races with the end of an execution is dropped
    # rather than killing the driver.
    if _executing:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)


def _read_exact(n):
    chunks = []
    while n > 0:
        try:
            chunk = os.read(_REQ, n)
        except InterruptedError:
            continue
        except KeyboardInterrupt:
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame():
    header = _read_exact(4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    body = _read_exact(length)
    if body is None:
        return None
    return json.loads(body)


def _write_frame(obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        written = os.write(_RES, data)
        data = data[written:]


def _flush_std():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _user_frames(tb):
    # Drop the driver's own frames (compiled from `-c`, so named "<string>") from the top.
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next
    return tb


def _describe(exc, with_tb=True):
    if isinstance(exc, SyntaxError) or not with_tb:
        lines = traceback.format_exception_only(type(exc), exc)
    else:
        lines = traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__))
    try:
        value = str(exc)
    except Exception:
        value = "<unprintable>"
    return {
        "name": type(exc).__name__,
        "value": value,
        "traceback": "".join(lines).rstrip("\n").split("\n"),
    }


def _png_output(data):
    return {"mime_type": "image/png", "data": base64.b64encode(data).decode("ascii")}


def _capture_figures(rich, budget):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return budget
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            data = buf.getvalue()
            if len(data) <= budget:
                rich.append(_png_output(data))
                budget -= len(data)
            else:
                sys.stderr.write("[figure %d omitted: rich output limit reached]\n" % num)
    except Exception:
        traceback.print_exc()
    finally:
        try:
            plt.close("all")
        except Exception:
            pass
    return budget


def _capture_image(value, rich, budget):
    pil = sys.modules.get("PIL.Image")
    if pil is None or not isinstance(value, pil.Image):
        return budget
    try:
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data = buf.getvalue()
        if len(data) <= budget:
            rich.append(_png_output(data))
            budget -= len(data)
        else:
            sys.stderr.write("[image omitted: rich output limit reached]\n")
    except Exception:
        traceback.print_exc()
    return budget


_namespace = {"__name__": "__main__", "__builtins__": builtins}


def _execute(request):
    global _executing
    seq = request["seq"]
    code = request["code"]
    filename = "<cell %d>" % seq
    result = {"op": "result", "seq": seq, "value": None, "error": None, "rich": []}
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    value = None
    try:
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            body = compile(tree, filename, "exec")
            tail = compile(last, filename, "eval") if last is not None else None
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            result["error"] = _describe(exc, with_tb=False)
        else:
            _executing = True
            try:
                exec(body, _namespace)
                if tail is not None:
                    value = eval(tail, _namespace)
            finally:
                _executing = False
                # A process forked by user code must never speak the protocol.
                if os.getpid() != _MAIN_PID:
                    os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are results too
        _executing = False
        if os.getpid() != _MAIN_PID:
            os._exit(1)
        result["error"] = _describe(exc)
        value = None
    budget = request.get("max_rich_bytes", 16 << 20)
    if value is not None:
        _namespace["_"] = value
        try:
            text = repr(value)
        except Exception as exc:  # noqa: BLE001
            text = "<repr failed: %s: %s>" % (type(exc).__name__, exc)
        limit = request.get("max_value_chars", 65536)
        if len(text) > limit:
            text = text[:limit] + "... [value truncated]"
        result["value"] = text
        budget = _capture_image(value, result["rich"], budget)
    _capture_figures(result["rich"], budget)
    return result


def _marker(seq):
    return b"\x1e" + _NONCE + b":" + str(seq).encode() + b"\x1e"


def main():
    _write_frame({"op": "ready", "pid": os.getpid()})
    while True:
        request = _read_frame()
        if request is None:
            return
        if request.get("op") != "execute":
            continue
        try:
            result = _execute(request)
        except MemoryError:
            result = {
                "op": "result",
                "seq": request["seq"],
                "value": None,
                "rich": [],
                "error": {"name": "MemoryError", "value": "", "traceback": []},
            }
        _flush_std()
        marker = _marker(request["seq"])
        for fd in (1, 2):
            try:
                os.write(fd, marker)
            except OSError:
                pass
        _write_frame(result)


main()
