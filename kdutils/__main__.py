"""``python -m kdutils``: the course tooling's command line (see ``kdutils/course/cli.py``)."""
import sys

from .course.cli import main

if __name__ == "__main__":
    sys.exit(main())
