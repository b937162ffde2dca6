"""``python -m lightopt.report SWEEP_DIR``: build (or rebuild) the report of a sweep directory."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_NOT_A_SWEEP = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report; exit 2 for a directory that is not a sweep's or a study that cannot be opened."""
    import argparse

    from lightopt.errors import ConfigError
    from lightopt.search.report import NotASweepDir, build_report

    parser = argparse.ArgumentParser(prog="python -m lightopt.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. multirun/2024-05-01/12-00-00")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_report(args.sweep_dir)
    except NotASweepDir as err:
        print(f"lightopt: report: {err}", file=sys.stderr, flush=True)
        return EXIT_NOT_A_SWEEP
    except ConfigError as err:  # the sweep's storage cannot be opened (a database server down, say)
        print(f"lightopt: report: cannot open the study of {args.sweep_dir}: {err}", file=sys.stderr, flush=True)
        return EXIT_NOT_A_SWEEP
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
