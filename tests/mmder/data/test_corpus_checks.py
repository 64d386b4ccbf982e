"""What adapters tell the harness before any decoding: linked folders, empty roots, typed options, labels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus
from mmder.data.corpora import (
    CorpusListing,
    EmptyCorpusError,
    corpus_modalities,
    corpus_options_model,
    list_corpus,
    register_corpus,
)

ACTORS = ("Actor_01", "Actor_02", "Actor_03")


def _linked_ravdess(shared_data: Path, root: Path) -> Path:
    """A root whose actor folders are links to the shared ones, plus a link loop back to the root."""
    root.mkdir()
    for actor in ACTORS:
        (root / actor).symlink_to(shared_data / "ravdess-speech-16k" / actor, target_is_directory=True)
    (root / "Actor_01_again").symlink_to(root, target_is_directory=True)  # a loop must not hang
    return root


def _rows(listing: CorpusListing, root: Path) -> list[tuple]:
    return [
        (c.clip_id, c.label, c.speaker, os.path.relpath(c.audio or "", root), c.video, c.extra)
        for c in listing.clips
    ]


def test_linked_actor_folders_list_like_real_ones(shared_data: Path, tmp_path: Path) -> None:
    real_root = shared_data / "ravdess-speech-16k"
    root = _linked_ravdess(shared_data, tmp_path / "linked")
    linked = list_corpus("ravdess", root)
    real = list_corpus("ravdess", real_root)
    real.clips = [c for c in real.clips if c.speaker in ACTORS]
    assert len(linked.clips) == 3 * 60 and linked.skipped == []
    assert _rows(linked, root) == _rows(real, real_root)
    assert linked.classes == real.classes


def test_linked_actor_folders_prepare_like_real_ones(shared_data: Path, tmp_path: Path) -> None:
    root = _linked_ravdess(shared_data, tmp_path / "linked")
    real_root = tmp_path / "real" / "Actor_01"
    real_root.mkdir(parents=True)
    for f in sorted((root / "Actor_01").iterdir())[:3]:
        (real_root / f.name).write_bytes(f.read_bytes())
    config = PreprocessConfig(image_size=16)
    linked = ClipCache.open(prepare_corpus("ravdess", root, tmp_path / "cache", config, limit=3))
    real = ClipCache.open(prepare_corpus("ravdess", real_root.parent, tmp_path / "cache", config))
    assert [c.clip_id for c in linked.clips] == [c.clip_id for c in real.clips]
    assert np.array_equal(linked.audio16, real.audio16) and np.array_equal(linked.audio8, real.audio8)


def test_root_without_usable_clip_says_what_it_saw(tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    (root / "Actor_01").mkdir(parents=True)
    for i in range(10):
        (root / "Actor_01" / f"clip{i:02d}.wav").write_bytes(b"x")
    for rep in ("01", "02"):
        (root / "Actor_01" / f"03-02-05-01-01-{rep}-01.wav").write_bytes(b"x")  # song recordings
    (root / "README.txt").write_text("notes")
    with pytest.raises(EmptyCorpusError) as err:
        prepare_corpus("ravdess", root, tmp_path / "cache", PreprocessConfig(image_size=16))
    message = str(err.value)
    assert isinstance(err.value, ValueError) and str(root) in message
    assert "saw 13 files" in message
    assert "10 not named like RAVDESS" in message
    assert "2 song files left out (include_song: false)" in message
    assert "1 not audio or video files" in message
    with pytest.raises(EmptyCorpusError, match="2 song files"):  # the listing alone, as the harness checks
        list_corpus("ravdess", root)
    assert len(list_corpus("ravdess", root, include_song=True).clips) == 2


def test_empty_manifest_and_iemocap_roots_say_why(tmp_path: Path) -> None:
    with pytest.raises(EmptyCorpusError, match="saw no utterance lines.*no Session1..Session5 folder"):
        prepare_corpus("iemocap", tmp_path, tmp_path / "cache")
    csv_path = tmp_path / "m.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clip_id", "video", "audio", "label", "speaker"])
        w.writerows([[f"c{i}", "", f"missing{i}.wav", "sad", "s1"] for i in range(3)])
    with pytest.raises(EmptyCorpusError, match="saw 3 manifest rows: 3 media files not found"):
        prepare_corpus("manifest", csv_path, tmp_path / "cache")


def test_options_models_check_names_and_values() -> None:
    ravdess = corpus_options_model("ravdess")
    with pytest.raises(ValidationError, match="bogus"):
        ravdess.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match="classes"):
        ravdess.model_validate({"classes": 6})
    with pytest.raises(ValidationError, match="modality"):
        ravdess.model_validate({"modality": "sound"})
    ok = ravdess.model_validate({"classes": 7, "modality": "audio", "include_song": True})
    assert (ok.classes, ok.modality, ok.include_song) == (7, "audio", True)
    defaults = {"classes": 8, "modality": "auto", "include_song": False}
    assert ravdess.model_validate({}).model_dump() == defaults
    with pytest.raises(ValidationError, match="speaker_side"):
        corpus_options_model("iemocap").model_validate({"speaker_side": "left"})
    assert corpus_options_model("iemocap").model_validate({"sessions": [1, 2]}).sessions == [1, 2]
    with pytest.raises(ValidationError, match="modality"):
        corpus_options_model("cremad").model_validate({"modality": "auto"})
    with pytest.raises(ValidationError, match="anything"):
        corpus_options_model("synthetic").model_validate({"anything": 1})
    assert corpus_options_model("manifest").model_validate({"classes": ["a", "b"]}).classes == ["a", "b"]
    with pytest.raises(KeyError, match="ravdess"):
        corpus_options_model("no-such-corpus")


def test_modalities_a_corpus_can_feed(monkeypatch) -> None:
    both = frozenset({"video", "audio"})
    assert corpus_modalities("ravdess", {"modality": "audio"}) == {"audio"}
    assert corpus_modalities("ravdess", {"modality": "video"}) == {"video"}
    assert corpus_modalities("ravdess", {}) == both
    assert corpus_modalities("ravdess", {"modality": "all"}) == both
    assert corpus_modalities("cremad", {"modality": "audio"}) == {"audio"}
    assert corpus_modalities("iemocap", {}) == both
    assert corpus_modalities("synthetic", {}) == both and corpus_modalities("manifest", {}) == both
    with pytest.raises(ValidationError):
        corpus_modalities("ravdess", {"modality": "sound"})

    from mmder.data import corpora

    monkeypatch.setitem(corpora.CORPORA, "silent", None)
    del corpora.CORPORA["silent"]

    @register_corpus("silent", modalities=lambda options: frozenset({"video"}))
    def silent(root: Path, *, n: int = 1) -> CorpusListing:
        return CorpusListing([], [])

    assert corpus_modalities("silent", {"n": 2}) == {"video"}
    with pytest.raises(ValidationError, match="n"):
        corpus_modalities("silent", {"n": "many"})


def _manifest(path: Path, labels: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clip_id", "video", "audio", "label", "speaker"])
        for i, label in enumerate(labels):
            (path.parent / f"{i}.wav").write_bytes(b"x")
            w.writerow([f"c{i}", "", f"{i}.wav", label, f"s{i % 3}"])
    return path


def test_manifest_without_classes_reports_them_and_flags_rare_labels(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path / "m.csv", ["angry"] * 20 + ["happy"] * 22 + ["angyr"] + ["sad"] * 21)
    listing = list_corpus("manifest", csv_path)
    assert listing.classes == ["angry", "angyr", "happy", "sad"]
    assert "found 4 classes: angry (20), angyr (1), happy (22), sad (21)" in listing.notes[0]
    (flag,) = listing.notes[1:]
    assert "'angyr' is on 1 clip only" in flag and "a typo of 'angry'?" in flag
    declared = list_corpus("manifest", csv_path, classes=["angry", "happy", "sad"])
    assert declared.notes == [] and len(declared.clips) == 63
    few = list_corpus("manifest", _manifest(tmp_path / "few.csv", ["a", "a", "b", "b", "c"]))
    assert len(few.notes) == 1  # the class summary; no class is rare next to the others
