"""Time the stages of ``make check`` and print them as a table (standard library only: the first stage
creates the environment this would otherwise need).

    python3 .ci/stages.py reset build/check/timings.json
    python3 .ci/stages.py run build/check/timings.json unit -- make unit
    python3 .ci/stages.py report build/check/timings.json

``run`` executes the command with this terminal, records its wall seconds and exit status under the
stage's name (the file is rewritten atomically after each stage, so a killed run keeps the stages
it finished) and exits with the command's status; when a stage fails, the table so far is printed
first, so CI's log says where the time went even on a red run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": []}


def save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def table(data: dict) -> str:
    stages = data["stages"]
    total = sum(s["seconds"] for s in stages)
    width = max([len(s["stage"]) for s in stages] + [5])
    lines = [f"{'stage':{width}}  {'seconds':>8}  {'minutes':>7}  status"]
    for s in stages:
        lines.append(f"{s['stage']:{width}}  {s['seconds']:8.0f}  {s['seconds'] / 60:7.1f}  "
                     f"{'ok' if s['status'] == 0 else 'FAILED (exit %d)' % s['status']}")
    lines.append(f"{'total':{width}}  {total:8.0f}  {total / 60:7.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("reset", "run", "report"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, path = argv[0], Path(argv[1])
    if verb == "reset":
        save(path, {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": []})
        return 0
    if verb == "report":
        data = load(path)
        print(f"\nmake check, stage by stage ({path}):\n{table(data)}")
        return 0
    if len(argv) < 5 or argv[3] != "--":
        print("usage: stages.py run FILE NAME -- COMMAND...", file=sys.stderr)
        return 2
    name, command = argv[2], argv[4:]
    start = time.perf_counter()
    status = subprocess.call(command)
    data = load(path)
    data["stages"] = [s for s in data["stages"] if s["stage"] != name]
    data["stages"].append({"stage": name, "seconds": round(time.perf_counter() - start, 1), "status": status})
    save(path, data)
    if status != 0:
        print(f"\nstage {name!r} failed (exit {status}); the stages so far:\n{table(data)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
