"""What a prepared cache is made with, and the key that names its folder.

Why a module of its own: the settings are read by three kinds of code (the experiment YAML's
``preprocess`` section validated by the harness, the decoding of one clip, the on-disk store), and
the folder key must be computed identically by all of them without importing OpenCV or PyAV.
:meth:`PreprocessConfig.fingerprint` covers only the settings that change the arrays; operational
fields (marked ``json_schema_extra={"operational": True}``, e.g. ``workers``) never enter it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from mmder.data.corpora import CorpusListing

__all__ = [
    "CACHE_VERSION",
    "FACE_MODES",
    "ARRAY_NAMES",
    "ARRAY_STEPS",
    "PreprocessConfig",
    "cache_key",
    "data_digest",
    "partial_path",
]

CACHE_VERSION = 2  # bump when the content of a cache changes for the same settings
FACE_MODES: tuple[str, ...] = ("none", "haar")
ARRAY_NAMES: tuple[str, ...] = ("video16", "video8", "audio16", "audio8")
ARRAY_STEPS: dict[str, int] = {"video16": 16, "video8": 8, "audio16": 16, "audio8": 8}
# Fields added after caches existed: in the fingerprint only when they differ from their default, so
# every cache made before keeps its key.
_ADDED_FIELDS: tuple[str, ...] = ("spectrogram_norm", "spectrogram_channels")


class PreprocessConfig(BaseModel):
    """Every setting that changes the cached arrays, plus operational ones that do not (``workers``).

    ``face_margin`` and ``face_min_fraction`` only matter for ``face='haar'``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(224, ge=8, description="side in pixels of every cached frame and spectrogram")
    face: Literal["none", "haar"] = Field(
        "none", description="'haar' crops one face box per clip; 'none' resizes whole frames"
    )
    spectrogram: Literal["mfcc", "logmel"] = Field(
        "mfcc", description="what the audio images show: MFCCs or log-mel energies"
    )
    colormap: Literal["viridis", "gray"] = Field(
        "viridis", description="how spectrogram values become RGB pixels"
    )
    sample_rate: int = Field(16000, ge=4000, le=192000, description="audio is resampled to this rate (Hz)")
    n_mfcc: int = Field(13, ge=1, description="MFCC coefficients per frame (spectrogram='mfcc')")
    n_mels: int = Field(40, ge=2, description="mel bands the MFCCs or log-mel images are computed from")
    spectrogram_norm: Literal["image", "clip", "clip_band"] = Field(
        "image",
        description="how spectrogram values become 0..255: 'image' min-max scales every window's image on "
        "its own (the paper: loudness and spectral tilt are lost); 'clip' standardises with the mean and "
        "std of the whole clip (windows keep their relative energy); 'clip_band' standardises every "
        "coefficient or mel band over the clip (per-utterance cepstral mean and variance normalisation)",
    )
    spectrogram_channels: Literal["colormap", "deltas"] = Field(
        "colormap",
        description="'colormap': one matrix drawn with `colormap` (the paper); 'deltas': the matrix, its "
        "time delta and delta-delta as the R, G and B channels, each scaled as `spectrogram_norm` says",
    )
    speaker_norm: Literal["none", "band", "window_band"] = Field(
        "none",
        description="standardise every speaker's spectrogram images with that speaker's own statistics, "
        "when a cell loads them (the cache is unchanged): 'band' per image row (a speaker-level mean and "
        "variance normalisation of each band), 'window_band' per row of each window position; 'none' = "
        "off. Transductive: a test speaker's statistics come from that speaker's unlabelled test clips",
        json_schema_extra={"omit_default": True, "load_time": True},
    )
    face_margin: float = Field(
        0.2, ge=0.0, le=2.0, description="fraction of the face size added on each side of the crop"
    )
    face_min_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of sampled frames that must show a face, else a centre crop"
    )
    workers: int = Field(
        1,
        ge=1,
        description="decoding processes used to prepare the cache (does not change its content)",
        json_schema_extra={"operational": True},
    )

    @model_validator(mode="after")
    def _mfcc_below_mels(self) -> PreprocessConfig:
        if not self.n_mfcc < self.n_mels:
            raise ValueError(f"need n_mfcc < n_mels, got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}")
        return self

    @classmethod
    def _marked(cls, flag: str) -> frozenset[str]:
        """Fields whose ``json_schema_extra`` sets ``flag``."""
        return frozenset(
            name
            for name, f in cls.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(flag)
        )

    @classmethod
    def load_time_fields(cls) -> frozenset[str]:
        """Fields applied when a cell reads the cache: in cell keys, not in the cache's fingerprint."""
        return cls._marked("load_time")

    @classmethod
    def operational_fields(cls) -> frozenset[str]:
        """Fields that say how to prepare, not what: left out of the fingerprint and of meta.json."""
        return cls._marked("operational")

    def content_settings(self) -> dict[str, Any]:
        """The settings that decide the arrays' content (what meta.json records as ``config``)."""
        return self.model_dump(exclude=set(self.operational_fields() | self.load_time_fields()))

    def fingerprint(self) -> str:
        """A stable short hash of the content settings and ``CACHE_VERSION`` (same on every machine)."""
        d = self.content_settings()
        if self.face == "none":  # face settings change nothing then: keep the key of whole-frame caches
            d.pop("face_margin")
            d.pop("face_min_fraction")
        for name in _ADDED_FIELDS:  # keep the keys of caches made before these fields existed
            if d.get(name) == type(self).model_fields[name].default:
                d.pop(name)
        payload = json.dumps({"cache_version": CACHE_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stat(path: str | None) -> list | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def cache_key(
    corpus: str, listing: CorpusListing, corpus_options: dict | None, config: PreprocessConfig
) -> str:
    """The hash naming a cache folder: listing (ids, labels, files, sizes, mtimes), options, config.

    Sizes and modification times stand in for checksums: they catch replaced or re-encoded files
    without reading gigabytes.
    """
    h = hashlib.sha256()
    head = {
        "corpus": corpus,
        "options": corpus_options or {},
        "config": config.fingerprint(),
        "classes": listing.classes,
        "skipped": [list(s) for s in listing.skipped],
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for c in listing.clips:
        row = [c.clip_id, c.label, c.speaker, c.group, _stat(c.video), _stat(c.audio), repr(c.extra)]
        h.update(json.dumps(row, default=str).encode())
    return h.hexdigest()[:16]


def data_digest(listing: CorpusListing, options: dict | None, root: str | os.PathLike | None = None) -> str:
    """The identity of the data a cell sees: every listed clip's ids, label, speaker and files (path,
    size, mtime), what was skipped, the classes and the corpus options; not how it is preprocessed.

    Why apart from :func:`cache_key`: a finished result is stale when its data changed, whatever the
    cache. Paths are taken relative to ``root`` when under it, so moving a corpus (``root`` is
    operational) keeps its digest while adding, removing or re-encoding a file changes it.
    """
    base = os.path.abspath(root) if root is not None else None

    def rel(path: str | None) -> list | None:
        row = _stat(path)
        if row is not None and base is not None and path is not None:
            absolute = os.path.abspath(path)
            if absolute == base or absolute.startswith(base + os.sep):
                row[0] = os.path.relpath(absolute, base)
        return row

    h = hashlib.sha256()
    head = {
        "options": options or {},
        "classes": listing.classes,
        "skipped": sorted(
            os.path.relpath(p, base) if base and os.path.isabs(p) else p for p, _ in listing.skipped
        ),
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for c in listing.clips:
        row = [c.clip_id, c.label, c.speaker, c.group, rel(c.video), rel(c.audio), repr(c.extra)]
        h.update(json.dumps(row, default=str).encode())
    return h.hexdigest()[:16]


def partial_path(final: Path) -> Path:
    """Where the cache ``final`` is built (and resumed) until it is complete."""
    return final.parent / f".{final.name}.partial"
