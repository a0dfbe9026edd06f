"""Run notebooks at a profile and several seeds; print wall time and the headline figures.

    python benchmarks/notebook_runs.py notebooks/03_first_distillation.ipynb --profile full --seeds 0 1 2

Each run executes the notebook in a fresh kernel with KD_PROFILE / KD_SEED set and its results JSON
written to build/bench/<profile>-seed<N>/; the table lists seconds and every scalar metric.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kdutils.course.nbrun import run_notebooks  # noqa: E402


def scalars(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--profile", default="full", choices=["smoke", "full"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        out = ROOT / "build" / "bench" / f"{args.profile}-seed{seed}"
        os.environ.update(KD_PROFILE=args.profile, KD_SEED=str(seed), KD_RESULTS_DIR=str(out / "results"), MPLBACKEND="Agg")
        table = run_notebooks(args.notebooks, out, html=False)
        for _, r in table.iterrows():
            row = {"notebook": r.notebook, "seed": seed, "status": r.status, "seconds": r.seconds}
            result = out / "results" / (Path(r.notebook).stem + ".json")
            if r.status == "ok" and result.exists():
                row.update(scalars(json.loads(result.read_text())["metrics"]))
            rows.append(row)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200, "display.max_columns", 50)
    print(df.T.to_string(header=False) if len(df) < 6 else df.to_string(index=False))
    return int((df.status != "ok").any())


if __name__ == "__main__":
    sys.exit(main())
