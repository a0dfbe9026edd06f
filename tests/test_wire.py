"""The pipe between the grader's tests and the notebook (kdutils.course.wire): data only from the notebook's side.

Both ends run here, the notebook's in a thread, over a real pair of pipes: what the tests see is
what a submission can send, without starting a process.
"""
import json
import os
import struct
import threading

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdutils.course import wire


class Notebook:
    """A notebook's namespace served over pipes, as kdutils.course.notebook_runner serves it."""

    def __init__(self, ns: dict):
        a_r, a_w = os.pipe()      # grader -> notebook
        b_r, b_w = os.pipe()      # notebook -> grader
        self.student = wire.Endpoint(a_r, b_w, trusted_peer=True)
        self.student.namespace = ns
        self.grader = wire.Endpoint(b_r, a_w, trusted_peer=False)
        wire.SERVED["get"] = lambda ep, inp, name: (ep.namespace[name], {})
        threading.Thread(target=self.student.serve_forever, daemon=True).start()

    def get(self, name):
        return self.grader.request("get", name=name)[0]


def test_values_arrive_as_plain_data():
    class Agree(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("isclose", "allclose"):
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    class Yes(str):
        __eq__ = lambda self, other: True
        __hash__ = str.__hash__

    class Near(float):
        __sub__ = lambda self, other: Near(0.0)

    table = pd.DataFrame({"accuracy": [0.9, 0.5]}, index=["teacher", "student"])
    nb = Notebook({"t": torch.zeros(3).as_subclass(Agree), "s": Yes("B"), "x": Near(9.0), "table": table,
                   "nested": {"a": [1, 2.5, None, (True, "z")], "n": float("nan")}, "bf": torch.ones(2, 2, dtype=torch.bfloat16),
                   "expanded": torch.ones(()).expand(3, 1)})
    t = nb.get("t")
    assert type(t) is torch.Tensor and not torch.allclose(t, torch.ones(3)), "a Tensor subclass arrives as a plain tensor"
    assert type(nb.get("s")) is str and nb.get("s") != "A"
    assert type(nb.get("x")) is float and nb.get("x") - 1.0 == 8.0
    got = nb.get("table")
    assert isinstance(got, pd.DataFrame) and got.loc["student", "accuracy"] == 0.5
    nested = nb.get("nested")
    assert nested["a"] == [1, 2.5, None, (True, "z")] and nested["n"] != nested["n"]
    assert nb.get("bf").dtype == torch.bfloat16 and torch.equal(nb.get("expanded"), torch.ones(3, 1))


def test_functions_and_models_are_called_where_they_live_and_keep_their_identity():
    from kdutils import models

    student = models.MLP()
    other = nn.Linear(2, 2)

    def kl(s, t, T=1.0):
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean")

    nb = Notebook({"kl": kl, "student": student, "other": other, "pair": {"a": student, "b": student}})
    remote = nb.get("student")
    assert isinstance(remote, models.MLP) and isinstance(remote, nn.Module), "isinstance sees the trusted class"
    assert not isinstance(nb.get("other"), models.MLP)
    assert nb.get("student") is remote and nb.get("pair")["a"] is nb.get("pair")["b"], "one proxy per object"
    x = torch.randn(5, 40)
    from kdutils import train
    assert torch.allclose(train.predict(remote, x), train.predict(student, x))
    assert remote.training is True and {k: tuple(v.shape) for k, v in remote.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in student.state_dict().items()}
    with pytest.raises(AttributeError):
        remote.no_such_attribute
    assert getattr(remote, "no_such_attribute", "default") == "default"
    s, t = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    assert torch.isclose(nb.get("kl")(s, t, 2.0), kl(s, t, 2.0))


def test_gradients_cross_both_ways():
    def hint_term(student_map, teacher_map, regressor):
        mapped = regressor(student_map)
        if mapped.shape != teacher_map.shape:
            raise ValueError(f"shapes {tuple(mapped.shape)} and {tuple(teacher_map.shape)} differ")
        return ((mapped - teacher_map.detach()) ** 2).mean()

    def accumulate(student, micro_batches, per_token_loss):
        n = sum(mask.sum() for _, _, mask in micro_batches)
        total = 0.0
        for tokens, z_t, mask in micro_batches:
            loss = (per_token_loss(student(tokens), z_t) * mask).sum() / n
            loss.backward()
            total += loss.item()
        return total

    from collections import namedtuple

    LMOutput = namedtuple("LMOutput", ["logits", "loss"])

    def kd_loss(out, z_t, mask):       # a value-only fix: the right value, the cross-entropy's gradient still there
        kd = (z_t.softmax(-1) * (z_t.log_softmax(-1) - out.logits.log_softmax(-1))).sum(-1).mul(mask).sum() / mask.sum()
        return out.loss + kd - out.loss.detach()

    nb = Notebook({"hint_term": hint_term, "accumulate": accumulate, "LMOutput": LMOutput, "kd_loss": kd_loss})
    z_s, ce = torch.randn(2, 3, 5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    out = nb.get("LMOutput")(z_s, ce)
    assert out.loss.item() == 2.0 and type(out).__name__ == "LMOutput", "a namedtuple crosses as its fields"
    nb.get("kd_loss")(out, torch.randn(2, 3, 5), torch.ones(2, 3)).backward()
    assert ce.grad is not None and float(ce.grad) == 1.0 and z_s.grad.abs().sum() > 0, \
        "a gradient crosses twice (into the namedtuple the notebook built, then through the loss)"
    reg = nn.Conv1d(4, 9, 1)
    s = torch.randn(6, 4, 10, requires_grad=True)
    t = torch.randn(6, 9, 10, requires_grad=True)
    out = nb.get("hint_term")(s, t, reg)
    assert out.requires_grad
    out.backward()
    s2, reg2 = s.detach().clone().requires_grad_(), nn.Conv1d(4, 9, 1)
    reg2.load_state_dict(reg.state_dict())
    hint_term(s2, t, reg2).backward()
    assert t.grad is None, "a detached input gets no gradient"
    assert torch.allclose(s.grad, s2.grad) and torch.allclose(reg.weight.grad, reg2.weight.grad), \
        "the input's and the (pickled-over) module's gradients come back"
    with pytest.raises(ValueError, match=r"\(6, 9, 10\)"):
        nb.get("hint_term")(torch.randn(6, 4, 10), torch.randn(6, 9, 5), reg)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(9, 6), nn.Linear(6, 9)).double()
    per_token = lambda z_s, z_t: (z_t.softmax(-1) * (z_t.log_softmax(-1) - z_s.log_softmax(-1))).sum(-1)  # noqa: E731
    tokens, z_t = torch.randint(0, 9, (6, 5)), torch.randn(6, 5, 9, dtype=torch.float64)
    mask = torch.ones(6, 5, dtype=torch.float64)
    mask[:3, 2:] = 0
    (per_token(model(tokens), z_t) * mask).sum().div(mask.sum()).backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = nb.get("accumulate")(model, list(zip(tokens.chunk(2), z_t.chunk(2), mask.chunk(2))), per_token)
    assert isinstance(got, float)
    for p, w in zip(model.parameters(), want):
        assert torch.allclose(p.grad, w), "a backward in the notebook through the grader's own function and module"


def test_the_notebook_cannot_reach_into_the_grader():
    secret = {"token": "s3cret"}
    seen = []

    def probe(fn):
        seen.append(type(fn).__name__)
        for name in ("__globals__", "__closure__", "__code__"):
            assert not hasattr(fn, name), f"the notebook sees {name} of the grader's function"
        return fn(2)

    nb = Notebook({"probe": probe})
    assert nb.get("probe")(lambda x: x * 3 if secret else 0) == 6 and seen == ["Callback"]


def _frame(header: dict, blobs=()) -> bytes:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    return struct.pack("<I", len(head)) + head + b"".join(struct.pack("<Q", len(b)) + b for b in blobs)


def _raw(header: dict) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head


@pytest.mark.parametrize("frame, words", [
    (b"0000" + b"x" * 10, "header of"),
    (struct.pack("<I", 5) + b"{nope", "not JSON"),
    (_frame({"re": 1, "ok": {"P": 0}}, [b"\x80\x04K\x01."]), "pickle"),
    (_frame({"re": 1, "ok": {"t": 0, "dtype": "float64", "shape": [3]}}, [b"\x00" * 8]), "do not match"),
    (_frame({"re": 1, "ok": {"t": 0, "dtype": "object", "shape": [1]}}, [b"\x00" * 8]), "malformed tensor"),
    (_frame({"re": 1, "ok": {"y": 12345}}), "never handed out"),
    (_frame({"re": 1, "ok": {"D": [[{"L": []}, 1]]}}), "cannot be a key"),
    (_frame({"re": 1, "ok": {"zz": 1}}), "unknown kind"),
    (_raw({"re": 1, "ok": None, "blobs": [wire.MAX_BLOB + 1]}), "size limit"),
    (_raw({"re": 1, "ok": None, "blobs": [wire.MAX_BLOB] * 3}), "size limit"),
    # the notebook may only call what the grader handed it: reading an attribute of anything is refused
    (_frame({"id": 1, "op": "getattr", "args": {"target": 1, "name": "__globals__"}}), "refused"),
    (_frame({"id": 1, "op": "get", "args": {"name": "token"}}), "refused"),
    (_frame({"id": 1, "op": "call", "args": {"target": 1, "args": {"L": []}, "kwargs": {"D": []}}}), "never handed out"),
])
def test_malformed_answers_break_the_channel_never_the_grader(frame, words):
    """Whatever the notebook's process writes into the pipe costs at most its own grade: a bounded read,
    then ProtocolError (a BaseException: no test's ``except Exception`` swallows it)."""
    g_r, nb_w = os.pipe()
    nb_r, g_w = os.pipe()
    grader = wire.Endpoint(g_r, g_w, trusted_peer=False)
    os.write(nb_w, frame)
    with pytest.raises(wire.ProtocolError, match=words):
        grader.request("get", name="x")
    with pytest.raises(wire.ProtocolError):
        grader.request("get", name="y")            # a broken channel stays broken
    for fd in (g_r, nb_w, nb_r, g_w):
        os.close(fd)


def test_a_silent_notebook_times_out_and_a_closed_one_is_named():
    import time

    g_r, nb_w = os.pipe()
    nb_r, g_w = os.pipe()
    grader = wire.Endpoint(g_r, g_w, trusted_peer=False)
    grader.deadline = time.monotonic() + 0.2
    with pytest.raises(wire.Timeout):
        grader.request("get", name="x")
    grader.deadline = None
    os.close(nb_w)
    with pytest.raises(wire.ChannelClosed):
        grader.request("get", name="x")
    for fd in (g_r, nb_r, g_w):
        os.close(fd)
