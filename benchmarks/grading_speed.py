"""How long grading a class takes: seconds per submission, sandbox on, as `make grade` runs it.

    python benchmarks/grading_speed.py [--assignment a2_wrong_dataset] [--copies 8] [--jobs 2]

Grades ``--copies`` copies of the assignment's solution (a submission that runs every cell: the
slowest honest case) with ``--jobs`` at once, and prints the wall time per submission and what a
class of 200 would take. Run ``make assignments`` first (the autograder and its cache of trained
teachers). Figures depend on the machine: compare runs made side by side.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

from kdutils import runtime
from kdutils.course import grade


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assignment", default="a2_wrong_dataset")
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--dist", default=str(runtime.repo_root() / "dist"))
    args = p.parse_args()
    dist = Path(args.dist)
    solution = dist / args.assignment / "autograder" / f"{args.assignment}.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        subs.mkdir()
        for i in range(args.copies):
            shutil.copy(solution, subs / f"student{i:03d}.ipynb")
        start = time.perf_counter()
        table = grade.grade_folder(args.assignment, subs, dist=dist, out=Path(tmp) / "grades", jobs=args.jobs)
        wall = time.perf_counter() - start
    assert (table.total == table.possible).all(), table[["submission", "total", "status"]]
    per = wall / args.copies
    print(f"{args.assignment}: {args.copies} submissions in {wall:.1f} s with {args.jobs} jobs (sandboxed): "
          f"{per:.1f} s per submission; a class of 200: {200 * per / 60:.1f} min")


if __name__ == "__main__":
    main()
