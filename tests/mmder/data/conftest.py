"""Shared fixtures of the data tests: one small synthetic corpus and its prepared cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus
from mmder.data.synthetic import generate_corpus

# The shared real-data samples lie beside the checkout (<repo>/../shared/data), as in CI;
# $MMDER_SHARED_DATA points elsewhere.
REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("MMDER_SHARED_DATA") or REPO.parent / "shared" / "data")

# 6 classes x 2 clips x 4 speakers = 48 clips: a few seconds to generate and prepare.
SMALL = {"clips_per_class": 2, "speakers": 4, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_params() -> dict:
    return dict(SMALL)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synthetic") / "corpus", **SMALL)


@pytest.fixture(scope="session")
def synthetic_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_root: Path, synthetic_cache_root: Path) -> ClipCache:
    config = PreprocessConfig(image_size=64)
    prepared = prepare_corpus("synthetic", synthetic_root, synthetic_cache_root, config)
    return ClipCache.open(prepared.path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared real-data samples at {SHARED_DATA}")
        pytest.skip(f"shared real-data samples not found at {SHARED_DATA} (set MMDER_SHARED_DATA)")
    return SHARED_DATA
