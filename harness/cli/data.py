"""``mmder synth``, ``mmder prepare`` and ``mmder convert``: corpora, caches and checkpoints."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cli.base import Add, Handler, parse_options
from harness.experiment.errors import ConfigError


def register(add: Add) -> dict[str, Handler]:
    sy = add(
        "synth",
        "Write the synthetic corpus with known answers (mp4 + wav per clip, manifest.csv).",
        cmd_synth,
        "example: mmder synth data/synthetic --clips-per-class 3 --speakers 16 --seed 0",
    )
    sy.add_argument("out", help="output folder")
    sy.add_argument("--clips-per-class", type=int, default=3, help="clips per class and speaker")
    sy.add_argument("--speakers", type=int, default=16, help="number of speakers")
    sy.add_argument("--seed", type=int, default=0)
    pr = add(
        "prepare",
        "Decode a corpus into the preprocessed cache (faces, 16 frames, spectrogram images).",
        cmd_prepare,
        "example: mmder prepare ravdess /data/RAVDESS --face haar --option classes=7\n"
        "         mmder prepare cremad /data/CREMA-D --workers 8",
    )
    pr.add_argument("corpus", help="corpus adapter: ravdess, cremad, iemocap, manifest, synthetic")
    pr.add_argument("root", help="the corpus folder as downloaded (a CSV for manifest)")
    pr.add_argument("--cache-dir", default="cache", help="where the prepared cache goes")
    pr.add_argument("--face", choices=["haar", "none"], default="none", help="face crops")
    pr.add_argument("--image-size", type=int, default=224)
    pr.add_argument("--spectrogram", choices=["mfcc", "logmel"], default="mfcc")
    pr.add_argument("--colormap", choices=["viridis", "gray"], default="viridis")
    pr.add_argument("--workers", type=int, default=1, help="decoding processes")
    pr.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="corpus option, e.g. classes=7 or include_song=true (repeatable)",
    )
    cv = add(
        "convert",
        "Convert a VideoMAE checkpoint (official fine-tuned/pre-trained, HuggingFace) to ours.",
        cmd_convert,
        "example: mmder convert videomae_vit_l_k400.pth vit_l_ours.pt",
    )
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--num-heads", type=int, help="attention heads, when the size is not a known one")
    return {"synth": cmd_synth, "prepare": cmd_prepare, "convert": cmd_convert}


def cmd_synth(args: argparse.Namespace) -> int:
    from mmder.data.synthetic import generate_corpus

    for name in ("clips_per_class", "speakers"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
    t0 = time.monotonic()
    manifest = generate_corpus(
        Path(args.out), clips_per_class=args.clips_per_class, speakers=args.speakers, seed=args.seed
    )
    print(f"synthetic corpus: {manifest} ({time.monotonic() - t0:.1f} s)")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from mmder.data.cache import PreprocessConfig, prepare_corpus
    from mmder.data.corpora import available_corpora

    if args.corpus not in available_corpora():
        raise ConfigError(
            "corpus", f"{args.corpus!r} is not allowed; allowed: {', '.join(available_corpora())}"
        )
    if not Path(args.root).exists():
        raise ConfigError("root", f"folder does not exist: {args.root}")
    try:
        config = PreprocessConfig(
            image_size=args.image_size, face=args.face, spectrogram=args.spectrogram, colormap=args.colormap
        )
    except ValueError as err:
        raise ConfigError("--image-size/--face", str(err)) from err
    t0 = time.monotonic()
    try:
        prepared = prepare_corpus(
            args.corpus,
            args.root,
            args.cache_dir,
            config,
            corpus_options=parse_options(args.option),
            workers=args.workers,
            progress=sys.stderr.isatty(),
        )
    except (KeyError, ValueError) as err:
        raise ConfigError("--option", str(err)) from err
    print(f"prepared {prepared.n_prepared}, skipped {prepared.n_skipped} in {time.monotonic() - t0:.1f} s")
    print(f"cache: {prepared.path}")
    print(f"skip report: {prepared.skip_report}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mmder.models.checkpoints import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, num_heads=args.num_heads)
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0
