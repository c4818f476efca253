"""The `imgbench` command: `imgbench verify PATH...` checks stores against their checksums;
`imgbench publish results/DATASET` copies a run into docs/results and fills the README's headline."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imgbench", description="Tools for imgbench stores.")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check stores: every image's bytes and label against its checksum",
                       description="Check each store's manifest against its checksums and every image's stored "
                                   "bytes and label against its checksum. Exit status 0 if all are intact, 1 if "
                                   "any is damaged (the first damaged ids and files are named).")
    v.add_argument("paths", nargs="+", metavar="PATH", help="a store directory (with imgbench.json)")
    v.add_argument("--show", type=int, default=5, metavar="K", help="damaged images to name per store (5)")
    p = sub.add_parser("publish", help="copy a run's summary and plots into docs/results and fill the headline blocks",
                       description="Copy results/DATASET's summary.md, plots and run record into DOCS/results/DATASET "
                                   "and replace the '<!-- published:DATASET:headline -->' blocks of README.md and "
                                   "DOCS/*.md with that run's headline table.")
    p.add_argument("results", metavar="RESULTS", help="a results directory, e.g. results/sample")
    p.add_argument("--docs", default="docs", help="the docs folder (docs)")
    p.add_argument("--readme", default="README.md", help="the README to fill (README.md)")
    args = parser.parse_args(argv)

    if args.command == "publish":
        from .errors import UserError
        from .report.publish import publish

        try:
            publish(args.results, args.docs, (args.readme,))
        except UserError as e:
            print(f"imgbench publish: {e}", file=sys.stderr)
            return 2
        return 0

    from .backends import verify

    damaged = 0
    for path in args.paths:
        report = verify(path, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(report.summary(args.show), flush=True)
        damaged += not report.ok
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
