"""The result commands of ``mmder``: leaderboard, compare, report (argparse and handlers).

Importing this module builds no table: importing harness.results.leaderboard (scipy, pandas) here
would cost every command, `mmder status` included, seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.base import Add, Handler, add_experiment_args, load
from harness.tracking.tags import BEST_OBJECTIVE, KIND_SEARCH, TAG_CHOSEN, TAG_KIND, TAG_SEARCH, tag_filter

EXAMPLES = {
    "leaderboard": "example: mmder leaderboard experiments/quickstart.yaml --format markdown\n"
    "         mmder leaderboard experiments/ravdess-audio.yaml --references --per-class",
    "compare": "example: mmder compare experiments/quickstart.yaml FSLF video\n"
    "         mmder compare experiments/quickstart.yaml --all --metric uar --format csv",
    "report": "example: mmder report experiments/quickstart.yaml   (writes runs/quickstart/report.html)",
}

LEADERBOARD_FORMATS = ("table", "csv", "markdown", "json", "latex")
COMPARE_FORMATS = ("table", "csv", "json")
RESAMPLES = 2000  # mmder.eval.stats.RESAMPLES, repeated so `--help` imports no scipy; a test keeps them equal


def register(add: Add) -> dict[str, Handler]:
    """leaderboard, compare, report (the leaderboard's FORMATS are repeated here; a test keeps them equal)."""

    lb = add(
        "leaderboard",
        "Print the experiment's results: per (dataset, setting) mean with 95 % t interval over folds x "
        "seeds, pooled UAR/WAR, cost, and missing cells.",
        cmd_leaderboard,
        EXAMPLES["leaderboard"],
    )
    add_experiment_args(lb)
    lb.add_argument("--format", choices=list(LEADERBOARD_FORMATS), default="table")
    lb.add_argument("--per-class", action="store_true", help="add per-class recall (pooled predictions)")
    lb.add_argument(
        "--ensemble",
        action="store_true",
        help="add seed-ensemble rows: each clip's class probabilities averaged over a cell's k seeds",
    )
    lb.add_argument(
        "--references",
        action="store_true",
        help="print published results below, with deltas and protocol notes",
    )
    lb.add_argument(
        "--latex-costs",
        action="store_true",
        help="--format latex: add the cost columns (wall s/cell, clips/s, device-h, MFU) to the paper's "
        "table of setting, UAR and WAR with their intervals",
    )
    lb.add_argument(
        "--show-params",
        action="store_true",
        help="print the hyper-parameters each row's search chose (experiments with a `search:` block)",
    )

    cp = add(
        "compare",
        "Paired comparison of two settings on the same folds, seeds and test clips: a paired bootstrap "
        "resampling test speakers (interval and p), paired t and Wilcoxon over folds x seeds, and McNemar "
        "exact per clip (which assumes independent clips).",
        cmd_compare,
        EXAMPLES["compare"],
    )
    add_experiment_args(cp)
    cp.add_argument("a", nargs="?", help="setting A (e.g. FSLF)")
    cp.add_argument("b", nargs="?", help="setting B (e.g. video)")
    cp.add_argument("--metric", choices=["war", "uar"], default="war")
    cp.add_argument(
        "--dataset",
        help="dataset name (default: every dataset holding both settings)",
    )
    cp.add_argument("--all", action="store_true", help="every pair per dataset, Benjamini-Hochberg corrected")
    cp.add_argument(
        "--format",
        choices=list(COMPARE_FORMATS),
        default="table",
        help="table (speaker level first), or csv/json at full precision with the method note",
    )
    cp.add_argument(
        "--resamples",
        type=int,
        default=RESAMPLES,
        help="bootstrap resamples (the report and the leaderboard use the default, with seed 0)",
    )

    rp = add(
        "report",
        "Write one self-contained HTML report (figures embedded) and log it to the sweep's run.",
        cmd_report,
        EXAMPLES["report"],
    )
    add_experiment_args(rp)
    rp.add_argument(
        "--no-mlflow", action="store_true", help="do not log the figures to the sweep's MLflow run"
    )
    return {"leaderboard": cmd_leaderboard, "compare": cmd_compare, "report": cmd_report}


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.results.leaderboard import experiment_leaderboard, render

    exp = _collect(args)
    table = experiment_leaderboard(exp, per_class=args.per_class)  # the report shows this same table
    print(render(table, args.format, exp.datasets, references=args.references, costs=args.latex_costs))
    if args.ensemble:
        from harness.results.ensemble import experiment_ensemble, render_ensemble

        print(render_ensemble(experiment_ensemble(exp), args.format))
    if args.show_params:
        print(chosen_params_table(exp))
    return 0


def chosen_params_table(exp: Any) -> str:
    """Per (dataset, setting): what its search chose, from the search runs its finished cells name."""
    import json

    from mlflow.tracking import MlflowClient

    from harness.tracking.runs import search_all

    keys = {
        (r.dataset, r.setting): r.tags.get(TAG_SEARCH)
        for r in exp.runs.itertuples()
        if r.finished and isinstance(r.tags, dict) and r.tags.get(TAG_SEARCH)
    }
    if not keys or exp.tracking_uri is None:
        return "chosen hyper-parameters: none (no finished cell came from a search)"
    client = MlflowClient(tracking_uri=exp.tracking_uri)
    runs = search_all(client, [exp.experiment_id], tag_filter(TAG_KIND, KIND_SEARCH))
    chosen = {r.data.tags.get(TAG_SEARCH): r for r in runs}
    lines = ["chosen hyper-parameters (per-setting search on validation speakers):"]
    for (dataset, setting), key in keys.items():
        run = chosen.get(key)
        if run is None or TAG_CHOSEN not in run.data.tags:
            lines.append(f"  {dataset} / {setting}: search {key} not finished")
            continue
        values = json.loads(run.data.tags[TAG_CHOSEN])
        shown = ", ".join(
            f"{k.split('.', 1)[1]}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        best = run.data.metrics.get(BEST_OBJECTIVE)
        lines.append(
            f"  {dataset} / {setting}: {shown}" + (f"  (validation {best:.1f})" if best is not None else "")
        )
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.results.compare import NotComparable, compare, compare_all
    from harness.results.compare_text import render_all, render_comparisons

    exp = _collect(args)
    if args.all:
        print(render_all(compare_all(exp, args.metric, n_resamples=args.resamples), args.format))
        return 0
    if not (args.a and args.b):
        print("mmder: error: compare needs two settings A B, or --all", file=sys.stderr)
        return 2
    for s in (args.a, args.b):
        if s not in exp.settings:
            print(
                f"mmder: error: setting {s!r} is not in the grid; allowed: {', '.join(exp.settings)}",
                file=sys.stderr,
            )
            return 2
    datasets = [args.dataset] if args.dataset else list(exp.runs["dataset"].unique())
    status, done = 0, []
    for dataset in datasets:
        try:
            done.append(compare(exp, dataset, args.a, args.b, args.metric, n_resamples=args.resamples))
        except NotComparable as err:
            print(f"mmder: cannot compare: {err}", file=sys.stderr)
            status = 2
    if done:
        print(render_comparisons(done, args.format))
    return status


def cmd_report(args: argparse.Namespace) -> int:
    from harness.results.report import write_report

    exp = _collect(args)
    out = Path(exp.output or ".")
    if exp.tracking_uri is not None:  # the figures go to the parent run: here, even in a moved output
        from harness.tracking.relocate import adopt_output

        adopt_output(exp.tracking_uri, out)
    path, parent = write_report(exp, out / "report.html", log_to_mlflow=not args.no_mlflow)
    print(f"report: {path}")
    print(f"figures (SVG and PNG): {path.parent / 'figures'}")
    if parent:
        print(f"figures logged to the sweep's MLflow run {parent} (artifacts/report)")
    return 0


def _collect(args: argparse.Namespace) -> Any:
    """The experiment's runs, once its output folder is known to hold them (else exit 2, saying where)."""
    from harness.results.leaderboard import collect_runs
    from harness.results.where import find_results

    spec = load(args)
    return collect_runs(spec, find_results(spec, args.output).output)
