"""``bench report PATH/results.json [--out DIR]``: re-render charts, report.md and
report.html from a results file, and print the summary table. A run's folder
(``reports/<run-id>``) stands for the ``results.json`` inside it.

By default the outputs go next to the results file. A missing, unreadable or invalid
results file is one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_BAD_INPUT = 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the ``bench`` parser."""
    p = sub.add_parser("report", help="re-render charts and reports from a results.json",
                       description="Re-render charts/*.png, report.md and report.html from a "
                       "results.json written by 'bench compare'.")
    p.add_argument("results", metavar="PATH/results.json",
                   help="the results file to render, or the run folder that holds it")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where to write the report (default: the results file's folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `bench --help` does not pay for matplotlib.

    from bench.results import report
    from bench.results import schema as results

    path = Path(args.results)
    if path.is_dir():
        path = path / "results.json"
    try:
        doc = results.load(path)
    except results.ResultsError as exc:
        print(f"bench report: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out_dir = Path(args.out) if args.out else path.resolve().parent
    try:
        paths = report.render_report(doc, out_dir)
    except OSError as exc:
        print(f"bench report: error: cannot write to {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # validate() checks the keys; a value of the wrong type still ends here, not in a traceback.
        print(f"bench report: error: {path} has values the renderer cannot read "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    console = report.summary_console()
    report.print_summary(doc, console)
    console.print(f"report: {paths['report.html']}", highlight=False, markup=False)
    console.print(f"        {paths['report.md']}", highlight=False, markup=False)
    return EXIT_OK
