"""Which files make up one epoch's DeepSpeed checkpoint, and whether a copy of one is whole.

Every rank saves its part of a checkpoint into its own fresh folder, and the orchestrator (Ray Train)
merges those folders into one, so a kill mid-upload can leave a folder with a rank missing or a file
cut short. Each rank therefore writes, after DeepSpeed is done, a manifest of the files it wrote with
their sizes; a merged folder is complete only when every rank's manifest is there and every listed
file has its recorded size. The DeepSpeed file names per ZeRO stage are checked as a second line of
defence. Names as DeepSpeed 0.19.8 writes them on CPU/gloo (checked by tests/mmder/test_engine_checkpoint.py):

``P`` is ``bf16_`` with bf16, else nothing; ``r`` is the data-parallel rank; ``TAG`` the tag folder.

- every stage, rank 0: ``latest`` (holds the tag); ZeRO 1-3 add ``zero_to_fp32.py``, ``zero_to_torch.py``,
  which :func:`mmder.train.engine.drop_helper_scripts` removes (a resume never runs them).
- ZeRO 0: rank 0 ``TAG/mp_rank_00_model_states.pt`` (optimizer inside); other ranks write nothing.
- ZeRO 1, 2: rank 0 ``TAG/mp_rank_00_model_states.pt``; each rank
  ``TAG/Pzero_pp_rank_r_mp_rank_00_optim_states.pt``.
- ZeRO 3: each rank ``TAG/zero_pp_rank_r_mp_rank_00_model_states.pt`` and
  ``TAG/Pzero_pp_rank_r_mp_rank_00_optim_states.pt``.

Pure file checks, no torch or DeepSpeed import: the harness calls them from its driver.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST_PREFIX = "manifest-rank"


def manifest_name(rank: int, world_size: int) -> str:
    return f"{MANIFEST_PREFIX}{rank}-of{world_size}.json"


def is_manifest(relative: str) -> bool:
    """A rank's manifest (written last; its presence is what says the rank's files are complete)."""
    return "/" not in relative and relative.startswith(MANIFEST_PREFIX) and relative.endswith(".json")


def listing(folder: str | os.PathLike[str]) -> dict[str, int]:
    """{path relative to ``folder`` (posix): size in bytes} of every file below it, manifests excluded."""
    root = Path(folder)
    files = {}
    for path in root.rglob("*"):
        if path.is_file():
            relative = path.relative_to(root).as_posix()
            if not is_manifest(relative):
                files[relative] = path.stat().st_size
    return files


def expected_files(zero_stage: int, rank: int, *, tag: str, bf16: bool) -> set[str]:
    """The DeepSpeed files rank ``rank`` must have written for ``zero_stage`` (see the module table)."""
    optim = f"{tag}/{'bf16_' if bf16 else ''}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
    names: set[str] = {"latest"} if rank == 0 else set()
    if zero_stage == 3:
        names |= {f"{tag}/zero_pp_rank_{rank}_mp_rank_00_model_states.pt", optim}
        return names
    if rank == 0:
        names.add(f"{tag}/mp_rank_00_model_states.pt")
    if zero_stage in (1, 2):
        names.add(optim)
    return names


def write_manifest(
    folder: str | os.PathLike[str],
    *,
    rank: int,
    world_size: int,
    epoch: int,
    zero_stage: int,
    tag: str,
    bf16: bool,
    before: dict[str, int] | None = None,
) -> tuple[Path, set[str]]:
    """Record the files this rank wrote into ``folder`` (those not in ``before``, or changed in size).

    Returns (manifest path, expected DeepSpeed names this rank did not write). The manifest goes in
    last and through a rename, so a manifest that exists was written whole, after the files it lists.
    """
    before = before or {}
    files = {p: s for p, s in listing(folder).items() if before.get(p) != s}
    manifest: dict[str, Any] = {
        "rank": rank,
        "world_size": world_size,
        "epoch": epoch,
        "zero_stage": zero_stage,
        "tag": tag,
        "bf16": bf16,
        "files": files,
    }
    path = Path(folder) / manifest_name(rank, world_size)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)
    missing = expected_files(zero_stage, rank, tag=tag, bf16=bf16) - set(files)
    return path, missing


def read_manifest(folder: str | os.PathLike[str], rank: int, world_size: int) -> dict[str, Any] | None:
    """Rank ``rank``'s manifest, or None when it is absent, cut or not ours."""
    try:
        data = json.loads((Path(folder) / manifest_name(rank, world_size)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    if data.get("rank") != rank or data.get("world_size") != world_size:
        return None
    return data


def checkpoint_problems(path: str | os.PathLike[str], world_size: int) -> list[str]:
    """Why the checkpoint folder ``path`` cannot be resumed by ``world_size`` ranks (empty: it can).

    DeepSpeed's ZeRO shards are per rank, so a checkpoint of another world size does not count.
    """
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    manifests = []
    for rank in range(world_size):
        manifest = read_manifest(folder, rank, world_size)
        if manifest is None:
            return [f"manifest of rank {rank} of {world_size} missing or unreadable"]
        manifests.append(manifest)
    problems = []
    for key in ("epoch", "zero_stage", "tag", "bf16"):
        values = {json.dumps(m.get(key)) for m in manifests}
        if len(values) != 1:
            problems.append(f"ranks disagree on {key}: {sorted(values)}")
    if problems:
        return problems
    for manifest in manifests:
        rank = manifest["rank"]
        for relative, size in manifest["files"].items():
            file = folder / relative
            if not file.is_file():
                problems.append(f"rank {rank}: {relative} missing")
            elif file.stat().st_size != size:
                problems.append(f"rank {rank}: {relative} has {file.stat().st_size} bytes, not {size}")
        try:
            expected = expected_files(
                int(manifest["zero_stage"]), rank, tag=str(manifest["tag"]), bf16=bool(manifest["bf16"])
            )
        except (TypeError, ValueError):
            problems.append(f"rank {rank}: manifest without a valid zero_stage")
            continue
        for relative in sorted(expected - set(manifest["files"])):
            problems.append(f"rank {rank}: DeepSpeed file {relative} not recorded")
    if not problems:
        latest = (folder / "latest").read_text().strip()
        if latest != manifests[0]["tag"]:
            problems.append(f"latest names {latest!r}, not {manifests[0]['tag']!r}")
    return problems


def checkpoint_complete(path: str | os.PathLike[str], world_size: int) -> bool:
    """Every rank's part of the checkpoint is there, whole: safe to resume ``world_size`` ranks from."""
    return not checkpoint_problems(path, world_size)


def checkpoint_epoch(path: str | os.PathLike[str], world_size: int) -> int | None:
    """The finished epoch a complete checkpoint holds; None when it is incomplete."""
    if checkpoint_problems(path, world_size):
        return None
    manifest = read_manifest(path, 0, world_size)
    try:
        return int(manifest["epoch"]) if manifest is not None else None
    except (TypeError, ValueError):
        return None
