"""Do a notebook's primary claims hold at every seed? Run it at the full profile at many base seeds.

    python benchmarks/claims_sweep.py notebooks/03_first_distillation.ipynb --seeds 0 1 2 3 4 5 6 7 8 9 10

Each (notebook, seed) runs in a fresh kernel, ``--jobs`` at a time with one thread each, with
``KD_PROFILE=full KD_SEED=<seed> KD_DEVICE=cpu KD_CLAIMS=record`` (a failing claim is recorded, not
raised, so the claims after it are checked too). The executed copies and the claims each run
registered (``report.Claims``) go to ``<out>/seed<N>/``; a (notebook, seed) already there with a
finished run is not run again unless ``--rerun``. The table printed at the end (also written to
``<out>/claims.md`` and ``<out>/claims.json``) gives, per primary claim, in how many seeds it held,
the seeds where it failed, and at seed 0 (if swept) its effect over its noise (secondary findings,
``Claims.secondary``, are counted too, so the prose can say how often they held): the course keeps a
claim as primary only if it holds at every seed of a sweep of at least 10 base seeds other than 0 and
its effect at seed 0 is at least twice its noise. A run that stopped before a claim counts as a
failure of that claim ("missing").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kdutils.course.nbrun import execute, kernel_environment  # noqa: E402
from kdutils.files import atomic_write_text  # noqa: E402


def run_one(path: Path, seed: int, out: Path, timeout: int) -> dict:
    folder = out / f"seed{seed}"
    (folder / "results").mkdir(parents=True, exist_ok=True)
    env = kernel_environment(1)
    env.update(KD_PROFILE="full", KD_SEED=str(seed), KD_DEVICE="cpu", KD_CLAIMS="record",
               KD_RESULTS_DIR=str(folder / "results"))
    start = time.perf_counter()
    nb, status, where = execute(path, timeout=timeout, env=env)
    seconds = round(time.perf_counter() - start, 1)
    nb.metadata["kdutils"] = {"profile": "full", "seed": seed, "status": status, "seconds": seconds}
    nbformat.write(nb, folder / path.name)
    print(f"seed {seed:3d}  {path.name:40s} {status:7s} {seconds:7.1f}s {where}", flush=True)
    return {"status": status, "where": where, "seconds": seconds}


def finished(path: Path, seed: int, out: Path) -> bool:
    try:
        return nbformat.read(out / f"seed{seed}" / path.name, as_version=4).metadata["kdutils"]["status"] == "ok"
    except Exception:
        return False


def table(paths, seeds, out: Path) -> tuple[list[dict], str]:
    rows = []
    for path in paths:
        stem = path.stem
        per_seed = {}
        for seed in seeds:
            f = out / f"seed{seed}" / "results" / f"{stem}.claims.json"
            per_seed[seed] = json.loads(f.read_text())["claims"] if f.exists() else {}
        names = list(dict.fromkeys(n for s in seeds for n in per_seed[s]))
        for name in names:
            swept = [s for s in seeds if s != 0]
            held = [s for s in swept if per_seed[s].get(name, {}).get("holds") is True]
            failed = [s for s in swept if s not in held]
            seed0 = per_seed.get(0, {}).get(name) if 0 in seeds else None
            ratio = None
            if seed0 and seed0.get("effect") is not None and seed0.get("noise"):
                ratio = abs(seed0["effect"]) / seed0["noise"]
            latest = next(per_seed[s][name] for s in reversed(seeds) if name in per_seed[s])   # its wording, kind
            rows.append({"notebook": stem, "claim": name, "statement": latest["statement"],
                         "primary": latest.get("primary", True), "held": len(held),
                         "seeds": len(swept), "failed at": failed,
                         "seed 0": None if seed0 is None else seed0["holds"], "seed-0 effect / noise": ratio})
    lines = ["| notebook | claim | kind | held / seeds (≠ 0) | failed at | seed 0 | effect/noise at 0 |",
             "| --- | --- | --- | ---: | --- | --- | ---: |"]
    for r in sorted(rows, key=lambda r: (r["notebook"], not r["primary"])):
        ratio = "" if r["seed-0 effect / noise"] is None else f"{r['seed-0 effect / noise']:.1f}"
        seed0 = "" if r["seed 0"] is None else ("holds" if r["seed 0"] else "FAILS")
        kind = "primary" if r["primary"] else "in this run"
        lines.append(f"| {r['notebook'][:2]} | {r['statement']} | {kind} | {r['held']}/{r['seeds']} | "
                     f"{', '.join(map(str, r['failed at'])) or '-'} | {seed0} | {ratio} |")
    return rows, "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(11)))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "sweep")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--rerun", action="store_true", help="run again what already finished in --out")
    ap.add_argument("--report-only", action="store_true", help="print the table of what is in --out")
    args = ap.parse_args()
    args.out = args.out.resolve()       # the kernels run in the notebooks' folder: a relative path would land there
    paths = [p.resolve() for p in args.notebooks]
    for p in paths:
        if not p.exists():
            ap.error(f"no notebook {p}")
    if not args.report_only:
        todo = [(p, s) for s in args.seeds for p in paths if args.rerun or not finished(p, s, args.out)]
        print(f"{len(todo)} runs ({len(paths)} notebooks x {len(args.seeds)} seeds, "
              f"{len(paths) * len(args.seeds) - len(todo)} already done), {args.jobs} at a time", flush=True)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda ps: run_one(ps[0], ps[1], args.out, args.timeout), todo))
    rows, md = table(paths, args.seeds, args.out)
    atomic_write_text(args.out / "claims.json", json.dumps(rows, indent=2))
    atomic_write_text(args.out / "claims.md", md + "\n")
    print(md)
    weak = [r for r in rows if r["primary"] and (r["held"] < r["seeds"] or r["seeds"] < 10
                                                 or (r["seed-0 effect / noise"] or 2) < 2)]
    if weak:
        print(f"\n{len(weak)} claim(s) not kept as primary by the course's rule: "
              + "; ".join(f"{r['notebook'][:2]} {r['claim']}" for r in weak))
    return 1 if weak else 0


if __name__ == "__main__":
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    sys.exit(main())
