"""The preprocessing settings: validated like the YAML a user writes, and the same cache key as before."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmder.data.cache import PreprocessConfig as ReExported
from mmder.data.preprocess import PreprocessConfig

# Computed with the dataclass PreprocessConfig before it became a pydantic model: the cache folders
# users already have must keep their names.
DEFAULT_FINGERPRINT = "05a52446c20f6a46"
SIZE_64_FINGERPRINT = "c406ee31c3667c56"
HAAR_FINGERPRINT = "f1ab16c5a2c5b20e"


def test_fingerprint_unchanged_from_the_dataclass_version() -> None:
    assert ReExported is PreprocessConfig
    assert PreprocessConfig().fingerprint() == DEFAULT_FINGERPRINT
    assert PreprocessConfig(image_size=64).fingerprint() == SIZE_64_FINGERPRINT
    assert PreprocessConfig(face="haar").fingerprint() == HAAR_FINGERPRINT


def test_workers_is_operational_and_not_in_the_key() -> None:
    four = PreprocessConfig(workers=4)
    assert four.workers == 4 and four.fingerprint() == DEFAULT_FINGERPRINT
    assert "workers" not in four.content_settings()
    assert PreprocessConfig.model_json_schema()["properties"]["workers"]["operational"] is True
    with pytest.raises(ValidationError, match="workers"):
        PreprocessConfig(workers=0)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"bogus": 1}, "bogus"),
        ({"face": "retina"}, "face"),
        ({"spectrogram": "cqt"}, "spectrogram"),
        ({"colormap": "jet"}, "colormap"),
        ({"image_size": 4}, "image_size"),
        ({"sample_rate": 1000}, "sample_rate"),
        ({"face_margin": 3.0}, "face_margin"),
        ({"face_min_fraction": 1.5}, "face_min_fraction"),
        ({"n_mfcc": 40, "n_mels": 40}, "n_mfcc < n_mels"),
    ],
)
def test_bad_settings_are_rejected_by_name(settings: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PreprocessConfig.model_validate(settings)


def test_every_field_is_documented_and_the_model_is_frozen() -> None:
    schema = PreprocessConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert all(p.get("description") for p in schema["properties"].values())
    config = PreprocessConfig.model_validate({"image_size": 32, "face": "haar"})
    assert config == PreprocessConfig(image_size=32, face="haar") and hash(config) == hash(
        PreprocessConfig(image_size=32, face="haar")
    )
    with pytest.raises(ValidationError):
        config.image_size = 64  # type: ignore[misc]
