"""The parser core every command group registers with: one ``add`` per command, shared arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from harness.experiment.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
# add(name, help, handler, epilog=None) -> the command's parser (handler stored as its default)
Add = Callable[..., argparse.ArgumentParser]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown after its help (unless it says
    nothing: an off flag, an empty list, no value)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def version() -> str:
    """``mmder 0.x.y``, with the git commit when run from a clone (``+dirty`` with local changes)."""
    from harness.plan.provenance import git_commit
    from mmder.versions import package_version

    commit = git_commit()
    return f"mmder {package_version()}" + (f" (git {commit})" if commit != "unknown" else "")


class _Version(argparse.Action):
    """``--version``, computed only when asked (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version())
        parser.exit()


def make_parser() -> tuple[argparse.ArgumentParser, Add]:
    """The ``mmder`` parser and the ``add`` that registers one sub-command on it."""
    parser = argparse.ArgumentParser(
        prog="mmder",
        description="MultiMAE-DER benchmarking harness: Ray Tune grids of Ray Train + DeepSpeed jobs, "
        "tracked in MLflow.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str, handler: Handler, epilog: str | None = None) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help_.replace("%", "%%"),  # argparse %-formats help strings ("95 % t" broke --help)
            description=help_,
            epilog=epilog,
            formatter_class=HelpFormatter,
        )
        command.set_defaults(handler=handler)
        return command

    return parser, add


OUTPUT_HELP = "the sweep's output folder (default: runs/<experiment name> under the current folder)"


def add_experiment_args(parser: argparse.ArgumentParser, what: str = "experiment YAML file") -> None:
    """The arguments every command that reads an experiment takes."""
    parser.add_argument("experiment", help=what)
    parser.add_argument("--output", help=OUTPUT_HELP)
    add_set_arg(parser)


def add_set_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one field of the experiment, as if written in the file (repeatable), "
        "e.g. --set training.epochs=3 --set grid.seeds=[0,1]",
    )


def load(args: argparse.Namespace) -> Any:
    """The experiment the command names, with its ``--set`` overrides, validated."""
    from harness.experiment.loading import load_experiment

    return load_experiment(args.experiment, args.overrides)


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
