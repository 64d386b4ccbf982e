"""Fast ablations without Ray or MLflow: one recipe, every speaker fold, in this process, on one core.

``python -m mmder.tools.ablate --name logmel --preprocess '{"spectrogram": "logmel"}' \
--training '{"epochs": 30}'``
prepares (or reuses) the cache of the RAVDESS speech sample, then trains :func:`mmder.train.loop.fit` on each
fold in turn (a one-process gloo group) and appends one JSON line per recipe to ``--out``: WAR/UAR per
fold, their mean and sample std over folds, and the CPU minutes. ``--pretrain '{...}'`` first runs
:func:`mmder.train.pretrain.pretrain` per fold on that fold's training clips only (never its test speakers)
and fine-tunes from the exported encoder. Sections are the experiment file's (the same pydantic models,
so a recipe found here is pasted into ``experiments/*.yaml`` as it is).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmder.config import ModelConfig, PretrainConfig, TrainingConfig

if TYPE_CHECKING:
    from mmder.data.cache import ClipCache, PreprocessConfig
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import Fold

__all__ = ["run_recipe", "main"]

DEFAULT_ROOT = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "ravdess-speech-16k")

# What the helpers import lazily; run_recipe loads it before its CPU clock starts, so that the CPU
# minutes it reports count preparing and training, not imports.
_STACK = (
    "mmder.data.cache",
    "mmder.data.dataset",
    "mmder.data.folds",
    "mmder.models.classifier",
    "mmder.train.loop",
)


def _summary(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def run_recipe(
    *,
    preprocess: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    pretrain: dict[str, Any] | None = None,
    root: str = DEFAULT_ROOT,
    cache_root: str = "/tmp/mmder-ablate-cache",
    folds: int = 3,
    only_folds: list[int] | None = None,
    setting: str = "audio",
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train the recipe on each speaker fold; WAR/UAR (percent) per fold, mean and std, CPU minutes."""
    for name in _STACK:
        importlib.import_module(name)
    from mmder.data.cache import PreprocessConfig
    from mmder.data.folds import make_folds

    recipe = _Recipe(
        pcfg=PreprocessConfig(**{"image_size": 64, **preprocess}),
        mcfg=ModelConfig(**{"size": "tiny", **model}),
        tcfg=TrainingConfig(**training),
        pretrain=pretrain,
        setting=setting,
        seed=seed,
        cache_root=cache_root,
        verbose=verbose,
    )
    t_cpu0 = time.process_time()
    cache = _prepared_cache(root, cache_root, recipe.pcfg)
    prep_cpu = time.process_time() - t_cpu0
    protocol = {"kind": "speaker_kfold", "folds": folds}
    rows = []
    for j, fold in enumerate(make_folds(protocol, cache.speakers)):
        if only_folds is not None and j not in only_folds:
            continue
        rows.append(_run_fold(recipe, cache, fold, j))
        if verbose:
            print(f"fold {fold.name}: {json.dumps(rows[-1])}", flush=True)
    war_m, war_s = _summary([r["war"] for r in rows])
    uar_m, uar_s = _summary([r["uar"] for r in rows])
    return {
        "war_mean": round(war_m, 2),
        "war_std": round(war_s, 2),
        "uar_mean": round(uar_m, 2),
        "uar_std": round(uar_s, 2),
        "cpu_min": round((time.process_time() - t_cpu0) / 60, 2),
        "prep_cpu_min": round(prep_cpu / 60, 2),
        "folds": rows,
    }


@dataclass(frozen=True)
class _Recipe:
    """One recipe's sections, parsed, and how each fold is run (``pretrain`` is parsed per fold)."""

    pcfg: PreprocessConfig
    mcfg: ModelConfig
    tcfg: TrainingConfig
    pretrain: dict[str, Any] | None
    setting: str
    seed: int
    cache_root: str
    verbose: bool


def _prepared_cache(root: str, cache_root: str, pcfg: PreprocessConfig) -> ClipCache:
    """The RAVDESS speech sample's clip cache under ``pcfg``, prepared on one worker or reused."""
    from mmder.data.cache import ClipCache, prepare_corpus

    prepared = prepare_corpus(
        "ravdess", root, cache_root, pcfg, corpus_options={"classes": 8, "modality": "audio"}, workers=1
    )
    return ClipCache.open(prepared)


def _run_fold(recipe: _Recipe, cache: ClipCache, fold: Fold, j: int) -> dict[str, Any]:
    """Pre-train (when asked) and fine-tune a fresh model on one fold; its row of the recipe's result."""
    from mmder.train.loop import fit

    t0, c0 = time.monotonic(), time.process_time()
    train_set, test_set, val_set = _fold_datasets(recipe, cache, fold)
    net = _fresh_model(recipe, len(cache.classes))
    mae_loss = None
    if recipe.pretrain is not None:
        rcfg = PretrainConfig(**recipe.pretrain)
        mae_loss = _pretrain_fold(
            net, recipe.mcfg, recipe.pcfg, rcfg, cache, fold.train_idx, recipe.seed, recipe.cache_root
        )
    history: list[dict[str, float]] = []
    report = _history_reporter(history, j, recipe.verbose)
    num_classes = len(cache.classes)
    result = fit(
        net, train_set, test_set, num_classes, recipe.tcfg, report=report, val_set=val_set, seed=recipe.seed
    )
    return {
        "fold": fold.name,
        "war": 100 * result.war,
        "uar": 100 * result.uar,
        "epoch": result.epoch,
        "last_war": 100 * history[-1]["war"] if history else None,
        "mae_loss": mae_loss,
        "cpu_s": time.process_time() - c0,
        "wall_s": time.monotonic() - t0,
    }


def _fold_datasets(
    recipe: _Recipe, cache: ClipCache, fold: Fold
) -> tuple[FusedClipDataset, FusedClipDataset, FusedClipDataset | None]:
    """(train, test, validation or None): validation speakers come out of the fold's training speakers."""
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import validation_split

    train_idx, val_idx = fold.train_idx, None
    if recipe.tcfg.validation_speakers:
        train_idx, val_idx = validation_split(
            cache.speakers, fold.train_idx, recipe.tcfg.validation_speakers, seed=recipe.seed
        )
    setting, seed, norm = recipe.setting, recipe.seed, recipe.pcfg.speaker_norm
    train_set = FusedClipDataset(cache, train_idx, setting, seed=seed, speaker_norm=norm)
    test_set = FusedClipDataset(cache, fold.test_idx, setting, seed=seed, speaker_norm=norm)
    val_set = (
        FusedClipDataset(cache, val_idx, setting, seed=seed, speaker_norm=norm)
        if val_idx is not None
        else None
    )
    return train_set, test_set, val_set


def _fresh_model(recipe: _Recipe, num_classes: int) -> torch.nn.Module:
    """The recipe's classifier, initialised from the seed, so that every fold starts from the same weights."""
    from mmder.models.classifier import build_model

    torch.manual_seed(recipe.seed)
    return build_model(
        recipe.mcfg.size,
        num_classes=num_classes,
        image_size=recipe.pcfg.image_size,
        num_frames=16,
        drop_path_rate=recipe.mcfg.drop_path,
        head_dropout=recipe.mcfg.head_dropout,
        patch_size=recipe.mcfg.patch_size,
        tubelet_size=recipe.mcfg.tubelet_size,
    )


def _history_reporter(
    history: list[dict[str, float]], j: int, verbose: bool
) -> Callable[[Any, str | None], None]:
    """A ``fit`` report callback that keeps each epoch's rounded scalars in ``history`` (and prints them)."""

    def report(result: Any, checkpoint_dir: str | None) -> None:
        row = {k: round(float(v), 4) for k, v in result.scalars().items()}
        row["epoch"] = result.epoch
        history.append(row)
        if verbose:
            print(f"  fold{j + 1} {json.dumps(row)}", flush=True)

    return report


def _pretrain_fold(
    net: torch.nn.Module,
    mcfg: ModelConfig,
    pcfg: Any,
    rcfg: PretrainConfig,
    cache: Any,
    train_idx: np.ndarray,
    seed: int,
    cache_root: str,
) -> float:
    """MAE pre-training on the fold's training clips only; the encoder is loaded into ``net``.

    The exported encoder is kept under ``cache_root/encoders``, keyed by everything that shapes it
    (the prepared corpus, architecture, MAE recipe, the fold's clips, seed), so screens that only change
    the fine-tuning pre-train once.
    """
    import hashlib

    from mmder.data.dataset import FusedClipDataset
    from mmder.models.checkpoints import load_pretrained
    from mmder.models.mae import build_pretrainer
    from mmder.train.pretrain import export_encoder
    from mmder.train.pretrain import pretrain as run_pretrain

    identity = json.dumps(
        [
            cache.path.name,  # the prepared corpus: its folder name hashes its source and preprocessing
            pcfg.model_dump(mode="json"),
            [mcfg.size, mcfg.patch_size, mcfg.tubelet_size],
            rcfg.model_dump(mode="json"),
            sorted(int(i) for i in train_idx),
            seed,
        ],
        sort_keys=True,
    )
    saved = Path(cache_root) / "encoders" / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"
    if saved.exists():
        load_pretrained(net, str(saved))
        meta = saved.with_suffix(".json")
        return float(json.loads(meta.read_text())["loss"]) if meta.exists() else float("nan")
    torch.manual_seed(seed)
    mae = build_pretrainer(
        mcfg.size,
        image_size=pcfg.image_size,
        num_frames=16,
        patch_size=mcfg.patch_size,
        tubelet_size=mcfg.tubelet_size,
    )
    clips = FusedClipDataset(cache, train_idx, "audio", seed=seed, speaker_norm=pcfg.speaker_norm)
    result = run_pretrain(mae, clips, rcfg, report=lambda r, c: None, seed=seed)
    saved.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=saved.parent) as tmp:
        path = export_encoder(mae, Path(tmp) / "encoder.pt")
        path.replace(saved)  # atomic: a screen cut off mid-export leaves no half file
    saved.with_suffix(".json").write_text(json.dumps({"loss": float(result.loss)}))
    load_pretrained(net, str(saved))
    return float(result.loss)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mmder.tools.ablate", description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument(
        "--preprocess", default="{}", help="JSON: PreprocessConfig fields (image_size 64 unless set)"
    )
    ap.add_argument("--model", default="{}", help="JSON: ModelConfig fields (size tiny unless set)")
    ap.add_argument("--training", default="{}", help="JSON: TrainingConfig fields")
    ap.add_argument("--pretrain", default=None, help="JSON: PretrainConfig fields; pre-train per fold first")
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--cache-root", default="/tmp/mmder-ablate-cache")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--only-folds", default=None, help="comma-separated fold indices (0-based)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="ablation.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = {
        "preprocess": json.loads(args.preprocess),
        "model": json.loads(args.model),
        "training": json.loads(args.training),
        "pretrain": json.loads(args.pretrain) if args.pretrain else None,
    }
    only = [int(v) for v in args.only_folds.split(",")] if args.only_folds else None
    out = run_recipe(**spec, root=args.root, cache_root=args.cache_root, folds=args.folds, only_folds=only)
    line = {"name": args.name, **spec, **out}
    with open(args.out, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    print(
        f"{args.name}: WAR {out['war_mean']:.1f} ± {out['war_std']:.1f}  UAR {out['uar_mean']:.1f} ± "
        f"{out['uar_std']:.1f}  ({out['cpu_min']:.1f} CPU min)",
        flush=True,
    )


if __name__ == "__main__":
    main()
