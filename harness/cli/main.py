"""``mmder``: the command line. Each command group lives in its own module; every ``--help`` has an
example."""

from __future__ import annotations

import argparse
import os
import sys

from harness.cli import bench, data, experiment, output, results, sweep
from harness.cli.base import Handler, make_parser
from harness.experiment.errors import ConfigError

GROUPS = (experiment, sweep, results, output, data, bench)  # in the order `mmder --help` lists them


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The parser, and every command's handler by name."""
    parser, add = make_parser()
    handlers: dict[str, Handler] = {}
    for group in GROUPS:
        handlers.update(group.register(add))
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe must end here, not in the interpreter's exit
        return code
    except ConfigError as err:
        for problem in err.problems:  # every problem at once: a file is fixed in one round
            print(f"mmder: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nmmder: interrupted; run the same command again to continue where it stopped", file=sys.stderr
        )
        return 130
    except BrokenPipeError:
        # `mmder validate x.yaml | head`: the reader left; a traceback would only hide its output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
