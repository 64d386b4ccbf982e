"""The corpus registry and the manifest adapter."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mmder.data import corpora
from mmder.data.corpora import Clip, CorpusListing, available_corpora, list_corpus, register_corpus


def _write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert {"synthetic", "manifest"} <= set(available_corpora())
    with pytest.raises(KeyError, match="manifest"):
        list_corpus("no-such-corpus", tmp_path)
    with pytest.raises(ValueError, match="colour"):
        list_corpus("manifest", tmp_path, colour="red")


def test_register_a_new_adapter(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(corpora.CORPORA, "toy", None)
    del corpora.CORPORA["toy"]

    @register_corpus("toy")
    def toy(root: Path, *, n: int = 1) -> CorpusListing:
        clips = [Clip(f"c{i}", None, str(root / f"{i}.wav"), "x", "s") for i in range(n)]
        return CorpusListing(["x"], clips, [])

    assert [c.clip_id for c in list_corpus("toy", tmp_path, n=2).clips] == ["c0", "c1"]
    with pytest.raises(ValueError, match="already registered"):
        register_corpus("toy")(lambda root: CorpusListing([], []))


def test_manifest_paths_classes_and_skips(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.mp4", "a.wav", "b.wav", "c.wav"):
        (media / name).write_bytes(b"x")
    columns = ["clip_id", "video", "audio", "label", "speaker", "group"]
    rows = [
        {"clip_id": "a", "video": "media/a.mp4", "audio": "media/a.wav", "label": "sad", "speaker": "s1"},
        {"clip_id": "b", "video": "", "audio": str(media / "b.wav"), "label": "angry", "speaker": "s2"},
        {"clip_id": "b", "video": "", "audio": "media/c.wav", "label": "sad", "speaker": "s2"},
        {"clip_id": "d", "video": "", "audio": "media/missing.wav", "label": "sad", "speaker": "s2"},
        {"clip_id": "e", "video": "", "audio": "", "label": "sad", "speaker": "s2"},
        {"clip_id": "f", "video": "", "audio": "media/c.wav", "label": "bored", "speaker": "s3"}
        | {"group": "g1"},
    ]
    csv_path = _write(tmp_path / "manifest.csv", rows, columns)
    listing = list_corpus("manifest", tmp_path)  # a folder holding manifest.csv
    assert listing.classes == ["angry", "bored", "sad"]
    assert [c.clip_id for c in listing.clips] == ["a", "b", "f"]
    a = listing.clips[0]
    assert a.video == str((media / "a.mp4").resolve()) and a.audio == str((media / "a.wav").resolve())
    assert listing.clips[1].video is None and listing.clips[2].group == "g1"
    reasons = [r for _, r in listing.skipped]
    assert reasons == ["duplicate clip_id 'b'", "file not found", "no video and no audio path"]

    ordered = list_corpus("manifest", csv_path, classes=["sad", "angry"])
    assert ordered.classes == ["sad", "angry"]
    assert [c.clip_id for c in ordered.clips] == ["a", "b"]
    assert any("not in classes" in r for _, r in ordered.skipped)


def test_manifest_missing_columns(tmp_path: Path) -> None:
    csv_path = _write(tmp_path / "m.csv", [{"clip_id": "a", "label": "x"}], ["clip_id", "label"])
    with pytest.raises(ValueError, match="speaker"):
        list_corpus("manifest", csv_path)
    with pytest.raises(FileNotFoundError):
        list_corpus("synthetic", tmp_path)
