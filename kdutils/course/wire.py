"""The channel between the grader's test process and the sandboxed notebook: plain data, never pickle
from the student's side.

The hidden tests run in one process (``kdutils.course.autograde``, trusted: it runs no student code),
the notebook's cells in another (``kdutils.course.notebook_runner``, in the sandbox). A test that
reads a student's value asks for it over a pair of pipes; what comes back is **data**:

* ``None``, ``bool``, ``int``, ``float``, ``str`` and lists, tuples (named ones too: rebuilt from
  their field names), dicts and sets of data;
* tensors and NumPy arrays as raw bytes with a dtype from a fixed list and a shape (a ``Tensor``
  subclass arrives as a plain tensor: its ``__torch_function__`` stays behind);
* a pandas ``DataFrame`` as its index, columns and cells; a matplotlib ``Figure`` as what it draws
  (bars, lines, points), rebuilt as a fresh figure on the trusted side;
* anything else as a **remote reference** (``Remote``): a function, a model, a class. Using it
  (calling it, reading an attribute, indexing, iterating) is a request answered with data or another
  reference; the object itself never crosses.

Gradients cross as data too. When a test calls a student function with tensors that require a
gradient (or with one of its own ``nn.Module``\\ s, sent over pickled: the trusted side may send
code, never receive it), the result is attached to those inputs by ``_Attach``: its backward asks
the other side for the vector-Jacobian product (``torch.autograd.grad``) and gets the gradients back
as tensors. It works in both directions, so a student function may call a function the test handed
it (``per_token_loss``) and backpropagate through it. The student's side may only call what the test
handed it; it cannot read an attribute of a trusted object.

Framing: a 4-byte length and a JSON header, then its binary blobs, each with an 8-byte length.
Everything the trusted side reads is capped (``MAX_HEADER``, ``MAX_BLOB``, ``MAX_MESSAGE``) and validated; anything
malformed raises ``ProtocolError``.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time

import torch

MAX_HEADER = 16 << 20
MAX_BLOB = 128 << 20
MAX_MESSAGE = 256 << 20       # all of one message's blobs together
MAX_DEPTH = 40
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool, torch.complex64, torch.complex128)}


class ProtocolError(BaseException):
    """The other side sent something that is not a message of this protocol (a BaseException: a test's
    ``except Exception`` cannot swallow it; the grader stops talking to that notebook)."""


class ChannelClosed(BaseException):
    """The other side's process ended (or closed the channel) while an answer was awaited."""


class Timeout(BaseException):
    """No answer in time (a BaseException: a test's ``except Exception`` cannot swallow it)."""


class RemoteError(Exception):
    """An exception raised on the other side that is not a built-in one (its type name and message)."""


def _remote_exception(err: dict) -> BaseException:
    import builtins

    kind, msg = str(err.get("type", "Error"))[:100], str(err.get("message", ""))[:4000]
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(msg)
        except Exception:
            pass
    return RemoteError(f"{kind}: {msg}")


class Endpoint:
    """One side of the channel. ``trusted_peer``: the other side is the grader (its pickles are
    accepted, and it may use every object this side hands it). The student's side is
    ``Endpoint(..., trusted_peer=True)``; the grader's is ``trusted_peer=False``."""

    def __init__(self, rfd: int, wfd: int, *, trusted_peer: bool):
        self.rfd, self.wfd, self.trusted_peer = rfd, wfd, trusted_peer
        self.objects: dict[int, object] = {}      # what this side handed out, by id
        self.graphs: dict[int, tuple] = {}        # results kept for a backward the other side may ask for
        self.proxies: dict[int, object] = {}      # the other side's objects, one proxy each (identity kept)
        self.next_id = 0
        self.deadline: float | None = None        # the trusted side's time limit (time.monotonic)
        self.on_request = None                    # the student's side: run every request under its own limit
        self.broken: str | None = None            # why the trusted side stopped talking (then every request fails)

    # ---------------------------------------------------------------- framing
    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                    raise Timeout("no answer from the notebook in time")
            chunk = os.read(self.rfd, min(n - got, 1 << 20))
            if not chunk:
                raise ChannelClosed("the other side closed the channel")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _send(self, header: dict, blobs: list[bytes]):
        head = json.dumps({**header, "blobs": [len(b) for b in blobs]}, allow_nan=False).encode()
        data = [struct.pack("<I", len(head)), head]
        for b in blobs:
            data += [struct.pack("<Q", len(b)), b]
        payload = b"".join(data)
        view = memoryview(payload)
        while view:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.wfd], [], left)[1]:
                    raise Timeout("the notebook stopped reading")
            try:
                n = os.write(self.wfd, view[: 1 << 16])
            except BrokenPipeError:
                raise ChannelClosed("the other side closed the channel") from None
            view = view[n:]

    def _receive(self) -> tuple[dict, list[bytes]]:
        (n,) = struct.unpack("<I", self._read_exact(4))
        if n > MAX_HEADER:
            raise ProtocolError(f"a header of {n} bytes")
        try:
            header = json.loads(self._read_exact(n))
        except ValueError as exc:
            raise ProtocolError(f"a header that is not JSON ({exc})") from None
        sizes = header.get("blobs") if isinstance(header, dict) else None
        if not (isinstance(sizes, list) and all(type(s) is int and 0 <= s <= MAX_BLOB for s in sizes)
                and sum(sizes) <= MAX_MESSAGE):
            raise ProtocolError("a header without valid blob sizes (or over the size limit)")
        blobs = []
        for size in sizes:
            (m,) = struct.unpack("<Q", self._read_exact(8))
            if m != size:
                raise ProtocolError("a blob of another size than announced")
            blobs.append(self._read_exact(m))
        return header, blobs

    # ---------------------------------------------------------------- requests
    def request(self, op: str, **fields):
        """Send a request and wait for its answer, serving the other side's requests meanwhile."""
        if self.broken:
            raise ProtocolError(self.broken)
        self.next_id += 1
        rid = self.next_id
        out = Encoder(self)
        body = {k: out.encode(v) for k, v in fields.items()}
        try:
            self._send({"id": rid, "op": op, "args": body}, out.blobs)
            while True:
                header, blobs = self._receive()
                if "re" in header:
                    if header["re"] != rid:
                        continue                    # a late answer to a request that timed out
                    if "err" in header:
                        raise _remote_exception(header["err"] if isinstance(header["err"], dict) else {})
                    inp = Decoder(self, blobs)
                    value = inp.decode(header.get("ok"))
                    return value, header, inp, out
                self._serve(header, blobs)
        except (ProtocolError, ChannelClosed) as exc:
            if not self.trusted_peer:
                self.broken = self.broken or f"{type(exc).__name__}: {exc}"
            raise

    def serve_forever(self):
        while True:
            try:
                header, blobs = self._receive()
            except ChannelClosed:
                return
            self._serve(header, blobs)

    def _serve(self, header: dict, blobs: list[bytes]):
        rid = header.get("id")
        try:
            op = header.get("op")
            args = header.get("args") if isinstance(header.get("args"), dict) else {}
            handler = SERVED.get(op)
            if handler is None or (not self.trusted_peer and op not in PEER_MAY_REQUEST):
                raise ProtocolError(f"request {op!r} refused")
            inp = Decoder(self, blobs, serving=True)
            fields = {k: inp.decode(v) for k, v in args.items()}
            run = self.on_request or (lambda f: f())
            value, extra = run(lambda: handler(self, inp, **fields))
            out = Encoder(self)
            body = out.encode(value)
            extra = {k: out.encode(v) for k, v in extra.items()}
            self._send({"re": rid, "ok": body, **extra}, out.blobs)
        except (ProtocolError, ChannelClosed, Timeout):
            raise
        except BaseException as exc:        # noqa: BLE001 (every failure goes back as an answer)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not self.trusted_peer:
                raise
            try:
                msg = str(exc)[:4000]
            except Exception:
                msg = "(unprintable)"
            self._send({"re": rid, "err": {"type": type(exc).__name__[:100], "message": msg}}, [])

    # ---------------------------------------------------------------- calls with gradients
    def call(self, target: int, args, kwargs):
        """Call the other side's object ``target``; tensors needing a gradient get one through ``_Attach``."""
        value, header, inp, out = self.request("call", target=target, args=list(args), kwargs=dict(kwargs))
        sent = out.grad_inputs
        mgrads = inp.decode(header["mgrads"]) if "mgrads" in header else []
        for module, grads in zip(out.modules, mgrads if isinstance(mgrads, list) else []):
            params = list(module.parameters())         # gradients a backward inside the call left on our modules
            if isinstance(grads, list) and len(grads) == len(params):
                for p, g in zip(params, grads):
                    if isinstance(g, torch.Tensor) and g.shape == p.shape:
                        g = g.to(p.dtype)
                        p.grad = g if p.grad is None else p.grad + g
        handle = header.get("graph")
        if type(handle) is not int or not sent or not inp.received_grad:
            return value
        outs = inp.received_grad
        link = _Link(self, handle, len(sent))
        attached = _Attach.apply(link, len(outs), *outs, *sent)
        swap = {id(o): a for o, a in zip(outs, attached if isinstance(attached, tuple) else (attached,))}
        return _replace(value, swap)


def _replace(value, swap):
    if isinstance(value, torch.Tensor):
        return swap.get(id(value), value)
    if type(value) in (list, tuple):
        return type(value)(_replace(v, swap) for v in value)
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        return type(value)(*(_replace(v, swap) for v in value))
    if type(value) is dict:
        return {k: _replace(v, swap) for k, v in value.items()}
    return value


class _Link:
    def __init__(self, endpoint: Endpoint, handle: int, n_inputs: int):
        self.endpoint, self.handle, self.n_inputs = endpoint, handle, n_inputs

    def backward(self, grads):
        value = self.endpoint.request("vjp", handle=self.handle, grads=list(grads))[0]
        if not (isinstance(value, list) and len(value) == self.n_inputs):
            raise ProtocolError("a backward answer of the wrong length")
        return [g if isinstance(g, torch.Tensor) else None for g in value]


class _Attach(torch.autograd.Function):
    """Outputs computed on the other side, attached to the inputs sent there: backward asks for the VJP."""

    @staticmethod
    def forward(ctx, link, n_out, *tensors):
        outs, ins = tensors[:n_out], tensors[n_out:]
        ctx.link, ctx.shapes = link, [(t.shape, t.dtype) for t in ins]
        return tuple(o.clone() for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        got = ctx.link.backward([g.contiguous() for g in grads])
        fixed = []
        for g, (shape, dtype) in zip(got, ctx.shapes):
            fixed.append(g.to(dtype).reshape(shape) if g is not None and g.numel() == math.prod(shape) else None)
        return (None, None, *([None] * len(grads)), *fixed)


# ------------------------------------------------------------------------ encoding
class Encoder:
    """Turns a value into JSON-able data and blobs; records which tensors were sent needing a gradient."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint, self.blobs = endpoint, []
        self.grad_inputs: list[torch.Tensor] = []    # sent needing a gradient (a backward may come back for them)
        self.modules: list = []                      # the grader's modules sent over (their gradients come back)

    def blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def tensor(self, t: torch.Tensor, *, numpy=False, grad=False) -> dict:
        x = torch.Tensor.as_subclass(t, torch.Tensor) if type(t) is not torch.Tensor and isinstance(t, torch.Tensor) else t
        x = x.detach().cpu()
        x = torch.empty(x.shape, dtype=x.dtype).copy_(x)          # dense, standard strides (an expanded grad is not)
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise TypeError(f"a tensor of dtype {x.dtype} cannot be sent")
        raw = x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""
        return {"t": self.blob(raw), "dtype": dtype, "shape": list(x.shape), "grad": bool(grad), "np": numpy}

    def encode(self, v, depth=0):
        import numpy as np

        if depth > MAX_DEPTH:
            raise ValueError("a value nested too deep to send")
        if type(v) in (Remote, Callback):
            return self.other(v, depth)
        if v is None or type(v) in (bool, int, str):
            return v
        if type(v) is float or isinstance(v, (float, np.floating)) and not isinstance(v, np.ndarray):
            f = float(v)
            return f if math.isfinite(f) else {"f": repr(f)}
        if isinstance(v, (np.integer, np.bool_)):
            return v.item()
        if isinstance(v, str):                    # a subclass (its own __eq__, ...) arrives as the plain value
            return str.__str__(v)
        if isinstance(v, int):
            return int.__int__(v)
        if isinstance(v, tuple) and isinstance(getattr(type(v), "_fields", None), tuple):   # a namedtuple: its fields
            return {"nt": [type(v).__name__[:100], [str(f) for f in type(v)._fields],
                           [self.encode(x, depth + 1) for x in v]]}
        if type(v) in (list, tuple, set, frozenset):
            tag = {list: "L", tuple: "T", set: "S", frozenset: "S"}[type(v)]
            return {tag: [self.encode(x, depth + 1) for x in v]}
        if type(v) is dict or type(v).__name__ == "OrderedDict" and type(v).__module__ == "collections":
            return {"D": [[self.encode(k, depth + 1), self.encode(x, depth + 1)] for k, x in v.items()]}
        if isinstance(v, torch.dtype):
            return {"dt": str(v).removeprefix("torch.")}
        if isinstance(v, torch.Size):
            return {"T": [int(x) for x in v]}
        if type(v) is slice:
            return {"sl": [self.encode(v.start, depth + 1), self.encode(v.stop, depth + 1), self.encode(v.step, depth + 1)]}
        return self.other(v, depth)

    def other(self, v, depth):
        import numpy as np

        ep = self.endpoint
        if type(v) in (Remote, Callback) and object.__getattribute__(v, "_ep") is ep:
            return {"y": object.__getattribute__(v, "_rid")}       # the other side's own object, back to it
        if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter):
            grad = bool(v.requires_grad)
            if grad:
                self.grad_inputs.append(v)
            return self.tensor(v, grad=grad)
        if isinstance(v, np.ndarray):
            return self.tensor(torch.from_numpy(np.ascontiguousarray(v)), numpy=True)
        if not ep.trusted_peer:                   # the grader's side: its modules go over pickled
            if isinstance(v, torch.nn.Module):
                import io
                buf = io.BytesIO()
                torch.save(v, buf)
                self.grad_inputs.extend(p for p in v.parameters())
                self.modules.append(v)
                return {"P": self.blob(buf.getvalue())}
            if callable(v):
                ep.objects[id(v)] = v
                return {"r": id(v), "type": "callable"}
            raise TypeError(f"cannot send a {type(v).__name__} to the notebook")
        special = _table_or_figure(v, self, depth)
        if special is not None:
            return special
        ep.objects[id(v)] = v
        kind = type(v)
        return {"r": id(v), "type": f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"[:300]}


def _table_or_figure(v, out: Encoder, depth):
    """A DataFrame or a matplotlib Figure, sent as the data it holds (the student's side)."""
    import sys

    pd, figure = sys.modules.get("pandas"), sys.modules.get("matplotlib.figure")
    if pd is not None and isinstance(v, pd.DataFrame):
        return {"df": {"index": out.encode(list(v.index), depth + 1), "columns": out.encode(list(v.columns), depth + 1),
                       "data": out.encode([list(r) for r in v.itertuples(index=False, name=None)], depth + 1)}}
    if figure is not None and isinstance(v, figure.Figure):
        axes = []
        for ax in v.axes:
            axes.append({"patches": [[float(p.get_x()), float(p.get_y()), float(p.get_width()), float(p.get_height())]
                                     for p in ax.patches if hasattr(p, "get_height") and hasattr(p, "get_x")],
                         "lines": [[[float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]] for line in ax.lines],
                         "points": [[[float(a) for a in row] for row in c.get_offsets()] for c in ax.collections
                                    if hasattr(c, "get_offsets")]})
        return {"fig": out.encode(axes, depth + 1)}
    return None


# ------------------------------------------------------------------------ decoding
class Decoder:
    """Turns received data back into values: plain ones, or proxies for the other side's objects."""

    def __init__(self, endpoint: Endpoint, blobs: list[bytes], *, serving=False):
        self.endpoint, self.blobs, self.serving = endpoint, blobs, serving
        self.received_grad: list[torch.Tensor] = []       # received tensors marked as needing a gradient
        self.leaves: list[torch.Tensor] = []               # (serving a call) the inputs a backward differentiates
        self.received_modules: list = []                   # (serving a call) modules the grader sent

    def decode(self, d, depth=0):
        if depth > MAX_DEPTH:
            raise ProtocolError("a value nested too deep")
        if d is None or type(d) in (bool, int, float, str):
            return d
        if type(d) is list:          # a bare list: a list of encoded values (arguments, grads)
            return [self.decode(x, depth + 1) for x in d]
        if type(d) is not dict or len(d) < 1:
            raise ProtocolError("a value that is not data")
        if "L" in d or "T" in d or "S" in d:
            tag = "L" if "L" in d else "T" if "T" in d else "S"
            items = d[tag]
            if type(items) is not list:
                raise ProtocolError("a malformed sequence")
            vals = [self.decode(x, depth + 1) for x in items]
            return {"L": list, "T": tuple, "S": set}[tag](vals) if tag != "S" else _hashable_set(vals)
        if "D" in d:
            pairs = d["D"]
            if type(pairs) is not list or not all(type(p) is list and len(p) == 2 for p in pairs):
                raise ProtocolError("a malformed dict")
            out = {}
            for k, v in pairs:
                key = self.decode(k, depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise ProtocolError("a dict key that cannot be a key") from None
                out[key] = self.decode(v, depth + 1)
            return out
        if "nt" in d:
            parts = d["nt"]
            if not (type(parts) is list and len(parts) == 3 and type(parts[0]) is str and type(parts[1]) is list
                    and type(parts[2]) is list and len(parts[1]) == len(parts[2]) <= 256
                    and all(type(f) is str for f in parts[1])):
                raise ProtocolError("a malformed namedtuple")
            return _namedtuple(parts[0], tuple(parts[1]))(*[self.decode(x, depth + 1) for x in parts[2]])
        if "sl" in d:
            parts = d["sl"]
            if not (type(parts) is list and len(parts) == 3):
                raise ProtocolError("a malformed slice")
            vals = [self.decode(x, depth + 1) for x in parts]
            if not all(x is None or type(x) is int for x in vals):
                raise ProtocolError("a malformed slice")
            return slice(*vals)
        if "f" in d:
            if d["f"] not in ("nan", "inf", "-inf"):
                raise ProtocolError("a malformed float")
            return float(d["f"])
        if "dt" in d:
            if d["dt"] not in DTYPES:
                raise ProtocolError("an unknown dtype")
            return DTYPES[d["dt"]]
        if "t" in d:
            return self.tensor(d)
        if "r" in d:
            return self.endpoint_proxy(d)
        if "y" in d:
            obj = self.endpoint.objects.get(d["y"]) if isinstance(d["y"], int) else None
            if obj is None:
                raise ProtocolError("a reference to an object this side never handed out")
            return obj
        if "P" in d:
            if not self.endpoint.trusted_peer:
                raise ProtocolError("a pickle from the notebook's side")
            import io
            module = torch.load(io.BytesIO(self.blob(d["P"])), weights_only=False)
            for p in module.parameters():
                p.grad = None
            self.leaves.extend(p for p in module.parameters())
            self.received_modules.append(module)
            return module
        if "df" in d:
            return _dataframe(self, d["df"], depth)
        if "fig" in d:
            return _figure(self.decode(d["fig"], depth + 1))
        raise ProtocolError("a value of an unknown kind")

    def blob(self, i) -> bytes:
        if not (isinstance(i, int) and 0 <= i < len(self.blobs)):
            raise ProtocolError("a reference to a missing blob")
        return self.blobs[i]

    def tensor(self, d) -> torch.Tensor:
        dtype, shape = DTYPES.get(d.get("dtype")), d.get("shape")
        if dtype is None or not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise ProtocolError("a malformed tensor")
        raw = self.blob(d["t"])
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != math.prod(shape) * itemsize:
            raise ProtocolError("a tensor whose bytes do not match its shape")
        t = (torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)).reshape(shape)
        if d.get("np") is True:
            return t.numpy()
        if d.get("grad") is True and (t.is_floating_point() or t.is_complex()):
            self.received_grad.append(t)
            if self.serving:                      # an input of a call: a leaf the backward differentiates
                t.requires_grad_()
                self.leaves.append(t)
        return t

    def endpoint_proxy(self, d):
        ep = self.endpoint
        rid = d["r"]
        if not isinstance(rid, int):
            raise ProtocolError("a malformed reference")
        if rid not in ep.proxies:
            ep.proxies[rid] = Remote(ep, rid, str(d.get("type", "?"))[:300]) if not ep.trusted_peer else Callback(ep, rid)
        return ep.proxies[rid]


_NAMEDTUPLES: dict = {}


def _namedtuple(name: str, fields: tuple):
    """A namedtuple class with these fields (built here: the other side's class never crosses)."""
    import collections

    key = (name, fields)
    if key not in _NAMEDTUPLES:
        _NAMEDTUPLES[key] = collections.namedtuple(name if name.isidentifier() else "Record", fields, rename=True)
    return _NAMEDTUPLES[key]


def _hashable_set(vals):
    try:
        return set(vals)
    except TypeError:
        raise ProtocolError("a set of unhashable values") from None


def _dataframe(inp: Decoder, d, depth):
    import pandas as pd

    if type(d) is not dict:
        raise ProtocolError("a malformed DataFrame")
    index, columns, data = (inp.decode(d.get(k), depth + 1) for k in ("index", "columns", "data"))
    if not all(type(x) is list for x in (index, columns, data)) or len(data) != len(index) or \
            not all(type(r) is list and len(r) == len(columns) for r in data):
        raise ProtocolError("a malformed DataFrame")
    return pd.DataFrame(data, index=index, columns=columns)


def _figure(axes):
    """A fresh matplotlib Figure drawing the same bars, lines and points (what the tests read)."""
    from matplotlib.collections import PathCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    fig = Figure()
    if type(axes) is not list:
        raise ProtocolError("a malformed figure")
    for spec in axes:
        ax = fig.add_subplot()
        try:
            for x, y, w, h in spec["patches"]:
                ax.add_patch(Rectangle((float(x), float(y)), float(w), float(h)))
            for xs, ys in spec["lines"]:
                ax.add_line(Line2D([float(v) for v in xs], [float(v) for v in ys]))
            for pts in spec["points"]:
                ax.add_collection(PathCollection([], offsets=[[float(a) for a in p] for p in pts] or None))
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("a malformed figure") from None
    return fig


# ------------------------------------------------------------------------ proxies
_TRUSTED_PREFIXES = ("kdutils.", "torch.")


def _trusted_class(name: str):
    """The trusted class a remote object's type names, for ``isinstance`` (kdutils and torch classes only)."""
    import importlib
    import sys

    module, _, qual = name.rpartition(".")
    if not module.startswith(_TRUSTED_PREFIXES) or module.startswith("kdutils.course") or "<" in qual:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except Exception:
            return None
    cls = getattr(mod, qual, None)
    return cls if isinstance(cls, type) and cls.__module__ == module and cls.__qualname__ == qual else None


class Remote:
    """The grader's handle on an object in the notebook: every use of it is a request."""

    __slots__ = ("_ep", "_rid", "_type", "__weakref__")

    def __init__(self, ep, rid, type_name):
        object.__setattr__(self, "_ep", ep)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op, **fields):
        ep = object.__getattribute__(self, "_ep")
        return ep.request(op, target=object.__getattribute__(self, "_rid"), **fields)[0]

    @property
    def __class__(self):
        return _trusted_class(object.__getattribute__(self, "_type")) or Remote

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name, value):
        raise AttributeError("a test cannot set attributes of the notebook's objects")

    def __call__(self, *args, **kwargs):
        ep = object.__getattribute__(self, "_ep")
        return ep.call(object.__getattribute__(self, "_rid"), args, kwargs)

    def __getitem__(self, key):
        return self._ask("getitem", key=key)

    def __len__(self):
        return self._ask("len")

    def __bool__(self):
        return self._ask("bool")

    def __contains__(self, item):
        return self._ask("contains", item=item)

    def __iter__(self):
        it = self._ask("iter")
        while True:
            try:
                yield it._ask("next") if isinstance(it, Remote) else next(it)
            except StopIteration:
                return

    def __str__(self):
        return self._ask("str")

    def __repr__(self):
        return f"<notebook object {object.__getattribute__(self, '_type')}>"

    def __format__(self, spec):
        return format(str(self), spec)


class Callback:
    """The notebook's handle on a function the grader handed it: it may only call it."""

    __slots__ = ("_ep", "_rid")

    def __init__(self, ep, rid):
        self._ep, self._rid = ep, rid

    def __call__(self, *args, **kwargs):
        return self._ep.call(self._rid, args, kwargs)


# ------------------------------------------------------------------------ what each side serves
def _target(ep: Endpoint, target):
    if not isinstance(target, int) or target not in ep.objects:
        raise ProtocolError("a request on an object this side never handed out")
    return ep.objects[target]


def _op_call(ep, inp: Decoder, target, args, kwargs):
    fn = _target(ep, target)
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ProtocolError("malformed call arguments")
    result = fn(*args, **kwargs)
    extra = {}
    if inp.received_modules:      # what a backward inside the call left on the grader's modules goes back
        extra["mgrads"] = [[None if p.grad is None else p.grad.detach() for p in m.parameters()]
                           for m in inp.received_modules]
    outs = [t for t in _tensors(result) if t.requires_grad]
    if inp.leaves and outs:
        handle = id(result) ^ ep.next_id
        ep.next_id += 1
        ep.graphs[handle] = (outs, inp.leaves)
        extra["graph"] = handle
    return result, extra


def _tensors(v, depth=0):
    if depth > MAX_DEPTH:
        return []
    if isinstance(v, torch.Tensor):
        return [] if isinstance(v, torch.nn.Parameter) else [v]
    if isinstance(v, (list, tuple)) and (type(v) in (list, tuple) or hasattr(type(v), "_fields")):
        return [t for x in v for t in _tensors(x, depth + 1)]
    if type(v) is dict:
        return [t for x in v.values() for t in _tensors(x, depth + 1)]
    return []


def _op_vjp(ep, inp, handle, grads):
    if handle not in ep.graphs:
        raise ProtocolError("a backward through a graph this side does not hold")
    outs, leaves = ep.graphs[handle]
    if not isinstance(grads, list) or len(grads) != len(outs):
        raise ProtocolError("a backward with the wrong number of gradients")
    wanted = [t for t in leaves if t.requires_grad]
    got = torch.autograd.grad(outs, wanted, grad_outputs=[g.to(o.dtype) for o, g in zip(outs, grads)],
                              allow_unused=True, retain_graph=True) if wanted else []
    by = {id(t): g for t, g in zip(wanted, got)}
    return [by.get(id(t)) for t in leaves], {}


def _op_getattr(ep, inp, target, name):
    return getattr(_target(ep, target), name), {}


def _op_getitem(ep, inp, target, key):
    return _target(ep, target)[key], {}


def _op_len(ep, inp, target):
    return len(_target(ep, target)), {}


def _op_bool(ep, inp, target):
    return bool(_target(ep, target)), {}


def _op_contains(ep, inp, target, item):
    return item in _target(ep, target), {}


def _op_iter(ep, inp, target):
    return iter(_target(ep, target)), {}


def _op_next(ep, inp, target):
    return next(_target(ep, target)), {}


def _op_str(ep, inp, target):
    return str(_target(ep, target))[:4000], {}


SERVED = {"call": _op_call, "vjp": _op_vjp, "getattr": _op_getattr, "getitem": _op_getitem, "len": _op_len,
          "bool": _op_bool, "contains": _op_contains, "iter": _op_iter, "next": _op_next, "str": _op_str}
PEER_MAY_REQUEST = {"call", "vjp"}      # what the notebook may ask of the grader: call what it was handed
