"""Shared fixtures of the data tests: one small synthetic corpus and its prepared cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus
from mmder.data.synthetic import generate_corpus

SHARED_DATA = Path("/work/shared/data")

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
        pytest.skip("shared real-data samples not available")
    return SHARED_DATA
