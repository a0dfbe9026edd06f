"""What the grader reads back from a graded notebook's processes, trusting none of it.

The test process (``kdutils.course.autograde``) writes one JSON record per line to its stdout, each
prefixed with a random token of this run; the notebook's process, in the sandbox, may write anything
anywhere it can. So the host:

* reads at most ``OUTPUT_CAP`` bytes of a stream and drains the rest unread (``read_capped``): a flood
  costs nothing, and the sandbox never blocks on a full pipe;
* reads a file the sandbox left only if it is a regular file, never following a link or waiting on a
  FIFO (``read_regular``);
* keeps only well-formed records of known kinds and scores within [0, points] (``read_records``);
  anything else is reported as tampering, never raised, so one submission cannot stop the batch.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

OUTPUT_CAP = 4 << 20     # bytes read from a sandbox's output, its log or any file it wrote; the rest is dropped


def read_capped(stream, lines: list[bytes], cap: int = OUTPUT_CAP) -> None:
    """Collect ``stream``'s lines up to ``cap`` bytes in all, then drain the rest unread."""
    total = 0
    for line in stream:
        if total < cap:
            lines.append(line[: cap - total])
            total += len(line)


def read_regular(path: Path, cap: int = OUTPUT_CAP) -> str:
    """The first ``cap`` bytes of ``path`` as text, only if it is a regular file ("" otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, cap).decode(errors="replace")
    finally:
        os.close(fd)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def read_records(lines: list[bytes], token: str, qs: dict[str, float]):
    """The grading records among a test process's output lines: only lines that start with this run's
    token, each a JSON object of a known kind with values of the right type. A score must be a number
    in [0, points] (records of other questions are ignored); a malformed record or an impossible score
    is reported (as tampering). The best score of each question is kept.

    Returns (graded, cells, done, problems): ``graded`` {question: record}, ``cells`` {cell index:
    record}, ``done`` True when the notebook ran to its end, the reason it stopped (a string) when the
    test process says so, False otherwise; ``problems`` the tampering found, each said once."""
    graded, cells, done, problems = {}, {}, False, []
    for raw in lines:
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if not line.startswith(token):
            continue
        try:
            rec = json.loads(line[len(token):])
        except ValueError:
            problems.append("sent a malformed grading record")
            continue
        if not isinstance(rec, dict):
            problems.append("sent a malformed grading record")
        elif "question" in rec:
            q, score = rec.get("question"), rec.get("score")
            if not (isinstance(q, str) and q in qs):
                continue                                # not a question of this assignment: ignored
            if not (_number(score) and 0 <= score <= qs[q] + 1e-9):
                problems.append(f"sent a grading record with an impossible score for {q}")
            elif q not in graded or score > graded[q]["score"]:
                graded[q] = rec
        elif "tamper" in rec:
            problems.append(str(rec["tamper"])[:200])
        elif "stopped" in rec:                          # the notebook's process stopped before the end: why
            done = str(rec["stopped"])[:200]
        elif "cell" in rec:
            if isinstance(rec["cell"], int) and not isinstance(rec["cell"], bool):
                cells[rec["cell"]] = rec
        elif rec.get("done") is True:
            done = True
    return graded, cells, done, list(dict.fromkeys(problems))
