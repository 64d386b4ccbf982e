"""``mmder validate`` and ``mmder schema``: what an experiment file says, before anything runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.base import Add, Handler, add_experiment_args, load


def register(add: Add) -> dict[str, Handler]:
    v = add(
        "validate",
        "Check an experiment file (and, where its data is here, its corpus listings) and print its cells; "
        "starts nothing.",
        cmd_validate,
        "example: mmder validate experiments/quickstart.yaml\n"
        "         mmder validate experiments/paper.yaml   (paths on another machine are warnings here)",
    )
    add_experiment_args(v)
    v.add_argument("--list", action="store_true", help="every cell, not the first and last few")
    sc = add(
        "schema",
        "Print the experiment file's JSON Schema (for editors that complete and check YAML).",
        cmd_schema,
        "example: mmder schema > experiments/experiment.schema.json",
    )
    sc.add_argument("--file", "-o", help="write it to this file instead of standard output")
    return {"validate": cmd_validate, "schema": cmd_schema}


def _cell_line(cell: Any) -> str:
    return f"  {cell.key}  {cell.dataset} / {cell.setting} / {cell.fold_name} / seed {cell.seed}"


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.plan.cells import expand_cells, expand_pretrain_cells
    from harness.plan.checks import check_writable, missing_paths, read_listings
    from harness.plan.grid_size import DEFAULT_MAX_CELLS, cell_lines, describe_axes, largest_axis
    from harness.plan.places import Places

    spec = load(args)
    places = Places.of(spec, args.output)
    check_writable(places, existing_only=True)  # creates nothing: only folders that exist
    cells = expand_cells(spec)
    print(f"{args.experiment}: valid; {len(cells)} cells ({describe_axes(cells)})")
    for override in spec.overrides:
        print(f"  --set {override}  (validated; part of every key, as if written in the file)")
    if len(cells) > (spec.resources.max_cells or DEFAULT_MAX_CELLS):
        name, n = largest_axis(cells)
        print(
            f"warning: a sweep refuses more than {spec.resources.max_cells or DEFAULT_MAX_CELLS:,} cells "
            f"without --yes (the {name} axis multiplies by {n:,})"
        )
    for line in cell_lines(cells, _cell_line, args.list):
        print(line)
    if spec.model.pretrained == "mae":
        print(f"  + {len(expand_pretrain_cells(spec))} pre-trainings (mmder pretrain)")
    from mmder.presets import lr_rule

    t = spec.training
    world = spec.resources.num_workers
    preset = f"preset {t.preset}, " if t.preset else ""
    print(
        f"training: {preset}recipe {t.recipe}, lr {t.lr:g} at a global batch of {t.batch_size * world} "
        f"({t.batch_size} x {world} workers), {t.epochs} epochs, precision "
        f"{cells[0].training.precision if cells and cells[0].training else t.precision}"
    )
    print(f"  {lr_rule(t, world)}")
    if spec.search is not None:
        search = spec.search
        per = "(dataset, setting, fold)" if search.scope == "per_fold" else "(dataset, setting)"
        drawn = search.random_trials()
        how = "all at random" if drawn >= search.trials else f"{drawn} at random, then TPE"
        print(
            f"search: {search.trials} trials per {per}, {how}; validation {search.objective} on "
            f"{search.validation_speakers:g} held-out training speakers; pruner {search.pruner}"
        )
    missing = missing_paths(spec, places)
    for key, path in missing:
        print(f"warning: {key}: {path} does not exist here (a sweep checks it again before it starts)")
    if not missing:
        read_listings(spec, places, print, strict=True)
        print("corpus listings and folds: ok")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from harness.experiment.config import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.file:
        Path(args.file).write_text(text)
        print(f"wrote {args.file}")
    else:
        sys.stdout.write(text)
    return 0
