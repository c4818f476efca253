"""The `imgbench` command: `imgbench verify PATH...` checks stores against their checksums."""
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
    args = parser.parse_args(argv)

    from .backends import verify

    damaged = 0
    for path in args.paths:
        report = verify(path, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(report.summary(args.show), flush=True)
        damaged += not report.ok
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
