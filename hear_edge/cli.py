"""The `hear-edge` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import HearEdgeError


def _golden(args: argparse.Namespace) -> int:
    from .golden import FEATURE_BOUND, FRONTEND_FED_LOGIT_BOUND, LOGIT_BOUND, check_golden

    results = check_golden(args.golden_dir, use_config=not args.no_config)
    print(f"| case | logits (<= {LOGIT_BOUND:g}) | log-mel (<= {FEATURE_BOUND:g}) | power spectrum "
          f"(<= {FEATURE_BOUND:g}) | frontend-fed logits (<= {FRONTEND_FED_LOGIT_BOUND:g}) | |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.case} | {r.logits:.2e} | {r.log_mel:.2e} | {r.power_spectrum:.2e} | "
              f"{r.frontend_fed_logits:.2e} | {'ok' if r.passed else 'FAILED'} |")
    failed = [r.case for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} cases within bounds")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hear-edge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    golden = commands.add_parser("golden", help="check the reference model and frontend against a "
                                                "golden set of official outputs (needs torch)")
    golden.add_argument("golden_dir", help="folder with state_dict.pt, config.json, cases.json, *.npz")
    golden.add_argument("--no-config", action="store_true", help="infer every size from the tensors")
    golden.set_defaults(run=_golden)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return args.run(args)
    except HearEdgeError as error:
        print(f"hear-edge: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
