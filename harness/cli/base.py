"""The parser core every command group registers with: one ``add`` per command, shared arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from harness.experiment.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
# add(name, help, handler, epilog=None) -> the command's parser (handler stored as its default)
Add = Callable[..., argparse.ArgumentParser]


def make_parser() -> tuple[argparse.ArgumentParser, Add]:
    """The ``mmder`` parser and the ``add`` that registers one sub-command on it."""
    parser = argparse.ArgumentParser(
        prog="mmder",
        description="MultiMAE-DER benchmarking harness: Ray Tune grids of Ray Train + DeepSpeed jobs, "
        "tracked in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str, handler: Handler, epilog: str | None = None) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help_.replace("%", "%%"),  # argparse %-formats help strings ("95 % t" broke --help)
            description=help_,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(handler=handler)
        return command

    return parser, add


def add_experiment_args(parser: argparse.ArgumentParser, what: str = "experiment YAML file") -> None:
    """The two arguments every command that reads an experiment takes."""
    parser.add_argument("experiment", help=what)
    parser.add_argument("--output", help="the sweep's output folder (default: runs/<experiment name>)")


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs, each value read as YAML reads it: 7 -> int, true -> bool, [a, b] -> list."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--option", f"expected KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def print_figures(figures: dict) -> None:
    """A benchmark's figures, one ``name  value`` line each."""
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
