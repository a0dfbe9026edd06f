"""The course tooling's command line: ``python -m kdutils <command>``.

    run      execute the notebooks (one per core at once), write build/, print a table   (make run)
    colab    point every notebook's Colab badge and set-up cell at a repository (or a wheel URL/path)
    info     print the profile, seed and device this machine would use
    assign   build student and autograder versions of the assignments into dist/  (make assignments)
    grade    grade a folder of submissions into grades.csv                         (make grade)
    site     build the course's website from the executed notebooks                (make site)
    site-check  open every page of the website in headless Chromium, fail on a defect  (make site-check)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import runtime
from ..files import writable_folder
from .layout import build_dir, course_notebooks, dist_dir, grades_dir, notebooks_dir
from .nbrun import cores


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def _cmd_run(args) -> int:
    from .nbrun import run_notebooks

    runtime.check_environment()     # a bad KD_* value stops here, not inside the first notebook
    if args.notebooks:
        paths = [Path(p) for p in args.notebooks]
        for p in paths:
            if not p.is_file() or p.suffix != ".ipynb":
                raise runtime.ConfigError(f"{p} is not a notebook file (.ipynb) that exists")
    else:
        if not Path(args.root).is_dir():
            raise runtime.ConfigError(f"--root {args.root!r} is not a folder")
        paths = course_notebooks(Path(args.root))
        if not paths:
            raise runtime.ConfigError(f"no notebooks (NN_*.ipynb) under --root {args.root!r}")
    out = writable_folder(args.out, "--out")     # checked before the first notebook runs
    threads = args.threads or runtime.threads() or 1
    args.jobs = args.jobs or cores()
    start = time.perf_counter()
    table = run_notebooks(paths, out, timeout=args.timeout, html=not args.no_html, jobs=args.jobs, threads=threads)
    wall = time.perf_counter() - start
    print()
    print(table.to_string(index=False))
    print(f"{len(table)} notebooks in {wall:.0f} s of wall time ({table.seconds.sum():.0f} s of kernel time; "
          f"{args.jobs} at a time, {threads} thread(s) each)")
    failed = table[table.status != "ok"]
    if len(failed):
        for _, row in failed.iterrows():
            print(f"FAILED: {row.notebook} at {row['where']}", file=sys.stderr)
        return 1
    return 0


def _cmd_colab(args) -> int:
    from .colab import rewrite_all

    if not Path(args.root).is_dir():
        raise runtime.ConfigError(f"--root {args.root!r} is not a folder")
    edits = rewrite_all(Path(args.root), repo=args.repo, branch=args.branch, source=args.source)
    if not edits:
        raise runtime.ConfigError(f"no notebooks under --root {args.root!r}")
    for path, n in edits.items():
        print(f"{n:3d} cell(s) rewritten  {path}")
    return 0


def _cmd_info(args) -> int:
    for k, v in runtime.check_environment().items():
        print(f"{k:8s} {v}")
    return 0


def _cmd_assign(args) -> int:
    from .assign import assign_all

    table = assign_all(args.names or None, dist=Path(args.dist))
    print(table.to_string(index=False))
    return 0


def _cmd_grade(args) -> int:
    from .grade import grade_folder

    table = grade_folder(args.assignment, Path(args.submissions), dist=Path(args.dist),
                         out=Path(args.out) if args.out else None, timeout=args.timeout, cell_timeout=args.cell_timeout,
                         jobs=args.jobs, sandboxed=not args.no_sandbox, regrade=args.regrade)
    print(table.drop(columns=["digest"]).to_string(index=False))
    out = Path(args.out) if args.out else grades_dir(args.assignment)
    print(f"\nwrote {out / 'grades.csv'}, {out / 'grades.png'} and {out / 'feedback'}/")
    return 0


def _cmd_site(args) -> int:
    from .site import build_site, missing_notebooks

    run, root = Path(args.run), notebooks_dir()
    if not args.ready and not (run / "notebooks").is_dir():
        raise runtime.ConfigError(f"--run {args.run!r} holds no notebooks/ folder of executed notebooks: run `make run` "
                         "(or pass make check's build/check)")
    if args.ready:      # make site: are the executed notebooks there, or must make run come first?
        missing = missing_notebooks(run, root)
        if missing:
            print(f"{run / 'notebooks'} lacks {len(missing)} executed notebook(s): running make run first", file=sys.stderr)
            return 1
        return 0
    import time
    start = time.perf_counter()
    built = build_site(run, Path(args.out))
    for w in built["warnings"]:
        print(w, file=sys.stderr)
    print(f"{len(built['pages'])} notebook pages, the landing page, the syllabus and the results page in {built['out']}/ "
          f"({time.perf_counter() - start:.0f} s, {len(built['warnings'])} Sphinx warning(s)); open "
          f"{built['out'] / 'index.html'}")
    return 0


def _cmd_site_check(args) -> int:
    from .sitecheck import check_site

    if not (Path(args.site) / "index.html").is_file():
        raise runtime.ConfigError(f"{args.site!r} holds no index.html: build the site first (make site)")
    problems, pages = check_site(Path(args.site), shots=Path(args.shots))
    for page in pages:
        print(f"checked {page}")
    print(f"{len(pages)} pages opened in headless Chromium; screenshots in {args.shots}/")
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdutils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute the notebooks in order")
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/NN_*.ipynb)")
    p.add_argument("--root", default=str(notebooks_dir()))
    p.add_argument("--out", default=str(build_dir()))
    p.add_argument("--timeout", type=_positive(int), default=1800, help="seconds per cell")
    p.add_argument("--no-html", action="store_true")
    p.add_argument("--jobs", type=_positive(int), default=None,
                   help="notebooks executed at once (default: the number of cores, %d here)" % cores())
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="CPU threads per notebook's kernel (default: KD_THREADS, else 1)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("colab", help="point Colab badges and set-up cells at OWNER/NAME (or another install source)")
    p.add_argument("--repo", default=None, help="OWNER/NAME of the GitHub repository (badges, and kdutils installed from it)")
    p.add_argument("--branch", default="main")
    p.add_argument("--source", default=None,
                   help="install kdutils from here instead of GitHub: a git+https or https URL (e.g. a wheel), or a local path")
    p.add_argument("--root", default=str(notebooks_dir()))
    p.set_defaults(func=_cmd_colab)

    p = sub.add_parser("info", help="print profile, seed and device")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("assign", help="otter assign every assignment into dist/, checking the solutions")
    p.add_argument("names", nargs="*", help="assignments to build (default: all)")
    p.add_argument("--dist", default=str(dist_dir()))
    p.set_defaults(func=_cmd_assign)

    p = sub.add_parser("grade", help="grade a folder of submissions, each in its own sandbox")
    p.add_argument("--assignment", required=True)
    p.add_argument("--submissions", required=True,
                   help="folder of submissions: .ipynb, .zip, or one folder per student (LMS bulk downloads)")
    p.add_argument("--dist", default=str(dist_dir()))
    p.add_argument("--out", default=None, help="output folder (default: grades/<assignment>)")
    p.add_argument("--timeout", type=_positive(float), default=120.0, help="seconds per submission")
    p.add_argument("--cell-timeout", type=_positive(float), default=60.0, help="seconds per code cell")
    p.add_argument("--jobs", type=_positive(int), default=1, help="submissions graded at once (default 1)")
    p.add_argument("--regrade", action="store_true",
                   help="grade every submission again (default: only those new or changed since the last run)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run submissions without the bubblewrap sandbox (trusted work only: your own tests)")
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("site", help="build the course's website from executed notebooks (no second execution)")
    p.add_argument("--run", default=str(build_dir()),
                   help="the run whose outputs the pages show: its notebooks/ and results/ (default build/, make run's)")
    p.add_argument("--out", default=str(build_dir() / "site"))
    p.add_argument("--ready", action="store_true", help="only say (exit status) whether --run holds every notebook")
    p.set_defaults(func=_cmd_site)

    p = sub.add_parser("site-check", help="open every page in headless Chromium; fail on a defect")
    p.add_argument("site", nargs="?", default=str(build_dir() / "site"))
    p.add_argument("--shots", default=str(build_dir() / "site-check"), help="screenshots go here")
    p.set_defaults(func=_cmd_site_check)

    args = parser.parse_args(argv)
    from . import sandbox
    from .layout import CourseError
    from .site import SiteError
    from .sitecheck import BrowserUnavailable
    try:
        return args.func(args)
    except (CourseError, sandbox.SandboxUnavailable, SiteError, BrowserUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except runtime.ConfigError as exc:      # a mistake in the command line or the environment: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
