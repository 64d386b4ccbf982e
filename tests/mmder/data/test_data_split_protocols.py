"""Folds read from split files (EmoBox's layout) and the cross-corpus protocol, on rows made up here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmder.data.folds import (
    cross_corpus_targets,
    fold_names,
    make_folds,
    protocol_identity,
    split_files_have_validation,
)

SPEAKERS = [f"Actor_{a:02d}" for a in range(1, 7)]
LABELS = ["neutral", "happy", "sad"]


def rows(speakers=SPEAKERS, labels=LABELS, prefix="03-01") -> list[SimpleNamespace]:
    """One clip per speaker and label, ids like RAVDESS file names."""
    return [
        SimpleNamespace(clip_id=f"{prefix}-{li + 1:02d}-{s[-2:]}", label=label, speaker=s, group=None)
        for s in speakers
        for li, label in enumerate(labels)
    ]


def write_lists(root: Path, folds: dict[int, dict[str, list[str]]], clips, corpus="ravdess") -> Path:
    """EmoBox's layout: fold_N/<corpus>_<role>_fold_N.jsonl with key, wav, emo; speakers per role."""
    for n, roles in folds.items():
        folder = root / f"fold_{n}"
        folder.mkdir(parents=True)
        for role, speakers in roles.items():
            lines = [
                json.dumps(
                    {
                        "key": f"{corpus}-{c.clip_id}",  # EmoBox prefixes the corpus: the wav names the clip
                        "dataset": corpus,
                        "wav": f"downloads/{corpus}/{c.speaker}/{c.clip_id}.wav",
                        "emo": c.label.title(),
                    }
                )
                for c in clips
                if c.speaker in speakers
            ]
            (folder / f"{corpus}_{role}_fold_{n}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "label_map.json").write_text(json.dumps({"Neutral": "Neutral", "Happy": "Happy", "Sad": "Sad"}))
    return root


def make(protocol: dict, clips) -> list:
    return make_folds(protocol, [c.speaker for c in clips], clips=clips)


def test_split_files_reads_emobox_folds_with_names_from_the_folders(tmp_path):
    clips = rows()
    a, b, c = SPEAKERS[:2], SPEAKERS[2:4], SPEAKERS[4:]
    root = write_lists(
        tmp_path / "splits",
        {1: {"train": b + c, "test": a}, 2: {"train": a + c[:1], "valid": c[1:], "test": b}},
        clips,
    )
    protocol = {"kind": "split_files", "dir": str(root)}
    assert fold_names(protocol) == ["fold_1", "fold_2"]  # from the folders alone, no data
    assert fold_names({**protocol, "name": "emobox"}) == ["emobox1", "emobox2"]
    one, two = make(protocol, clips)
    spk = np.array([c.speaker for c in clips])
    assert one.test_speakers == a and set(spk[one.train_idx]) == set(b + c) and one.val_idx is None
    assert set(spk[two.val_idx]) == set(c[1:]) and set(spk[two.train_idx]) == set(a + c[:1])
    assert two.test_speakers == b and not one.notes
    assert split_files_have_validation(protocol)


def test_split_files_key_is_the_lists_digest_not_their_folder(tmp_path):
    clips = rows()
    spec = {1: {"train": SPEAKERS[2:], "test": SPEAKERS[:2]}}
    here = write_lists(tmp_path / "here", spec, clips)
    there = write_lists(tmp_path / "there", spec, clips)
    ident = protocol_identity({"kind": "split_files", "dir": str(here)})
    assert "dir" not in ident and ident == protocol_identity({"kind": "split_files", "dir": str(there)})
    test_file = there / "fold_1" / "ravdess_test_fold_1.jsonl"
    test_file.write_text("\n".join(test_file.read_text().splitlines()[:-1]) + "\n")  # one clip fewer
    assert protocol_identity({"kind": "split_files", "dir": str(there)}) != ident
    # the kinds that were there keep their identity as written (their cell keys do not move)
    kfold = {"kind": "speaker_kfold", "folds": 5}
    assert protocol_identity(kfold) is kfold


def test_split_files_refuses_clips_the_corpus_lacks_and_test_speakers_that_train(tmp_path):
    clips = rows()
    root = write_lists(tmp_path / "a", {1: {"train": SPEAKERS[1:], "test": SPEAKERS[:1]}}, clips)
    with pytest.raises(ValueError, match=r"3 clip\(s\) named in the lists are not in the corpus.*fold_1/"):
        make({"kind": "split_files", "dir": str(root)}, clips[3:])  # Actor_01's clips are not there
    leaky = write_lists(tmp_path / "b", {1: {"train": SPEAKERS[1:], "test": SPEAKERS[:2]}}, clips)
    with pytest.raises(ValueError, match=r"test speaker\(s\) \['Actor_02'\] also appear in its train list"):
        make({"kind": "split_files", "dir": str(leaky)}, clips)


def test_split_files_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        fold_names({"kind": "split_files", "dir": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="holds no fold_N folders"):
        fold_names({"kind": "split_files", "dir": str(tmp_path)})
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_1" / "x_train_fold_1.jsonl").write_text('{"key": "a"}\n')
    with pytest.raises(ValueError, match="has no test list"):
        fold_names({"kind": "split_files", "dir": str(tmp_path)})
    (tmp_path / "fold_1" / "x_test_fold_1.jsonl").write_text("not json\n")
    assert fold_names({"kind": "split_files", "dir": str(tmp_path)}) == ["fold_1"]
    with pytest.raises(ValueError, match=r"x_test_fold_1.jsonl:1: not a JSON object"):
        make({"kind": "split_files", "dir": str(tmp_path)}, rows())


def test_split_files_notes_an_emo_that_is_not_the_corpus_label(tmp_path):
    clips = rows()
    root = write_lists(tmp_path / "s", {1: {"train": SPEAKERS[1:], "test": SPEAKERS[:1]}}, clips)
    relabelled = [
        SimpleNamespace(**{**vars(c), "label": "calm" if c.label == "neutral" else c.label}) for c in clips
    ]
    (fold,) = make({"kind": "split_files", "dir": str(root)}, relabelled)
    assert fold.notes and "'Neutral' on 6 clip(s) labelled 'calm'" in fold.notes[0]


def test_cross_corpus_trains_on_one_corpus_and_tests_the_mapped_classes_of_another():
    train = rows(labels=["neutral", "happy", "sad"])
    test = rows(speakers=["spk01", "spk02"], labels=["calm", "joy", "anger"], prefix="x")
    protocol = {"kind": "cross_corpus", "test": "other", "labels": {"calm": "neutral", "joy": "happy"}}
    assert fold_names(protocol) == ["cross-other"]
    (fold,) = make_folds(protocol, [c.speaker for c in train], clips=train, test_clips=test)
    assert fold.test_source == "other" and len(fold.train_idx) == len(train)
    assert [test[i].label for i in fold.test_idx] == ["calm", "joy", "calm", "joy"]
    assert fold.test_speakers == ["spk01", "spk02"]
    assert "2 test clip(s) of 'other' dropped" in fold.notes[0] and "anger (2)" in fold.notes[0]
    assert cross_corpus_targets(protocol, ["neutral", "happy", "sad"], ["anger", "calm", "joy"]) == [-1, 0, 1]
    assert "test" not in protocol_identity(protocol)  # the cell key hashes the test dataset itself


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        ({"fear": "neutral"}, r"maps class\(es\) \['fear'\] that dataset 'other' does not have"),
        ({"calm": "bored"}, r"maps to class\(es\) \['bored'\] that the training corpus has no clip of"),
    ],
)
def test_cross_corpus_label_map_is_checked_against_both_corpora(labels, needle):
    train, test = rows(), rows(labels=["calm", "joy"], prefix="x")
    protocol = {"kind": "cross_corpus", "test": "other", "labels": labels}
    with pytest.raises(ValueError, match=needle):
        make_folds(protocol, [c.speaker for c in train], clips=train, test_clips=test)


@pytest.mark.parametrize(
    ("protocol", "needle"),
    [
        ({"kind": "cross_corpus", "labels": {"a": "b"}}, "'test' must name the dataset"),
        ({"kind": "cross_corpus", "test": "x", "labels": []}, "'labels' must map each test-corpus class"),
        ({"kind": "split_files"}, "'dir' must be the folder"),
    ],
)
def test_malformed_new_protocols_name_the_key(protocol, needle):
    with pytest.raises(ValueError, match=needle):
        fold_names(protocol)


def test_split_files_rename_maps_a_list_onto_other_clip_names(tmp_path):
    """EmoBox lists RAVDESS's audio-only files (03-...); the full-AV clips (01-...) are the same takes."""
    audio = rows(prefix="03-01")
    root = write_lists(tmp_path / "s", {1: {"train": SPEAKERS[1:], "test": SPEAKERS[:1]}}, audio)
    av = rows(prefix="01-01")
    with pytest.raises(ValueError, match="not in the corpus"):
        make({"kind": "split_files", "dir": str(root)}, av)
    (fold,) = make({"kind": "split_files", "dir": str(root), "rename": {"^03-": "01-"}}, av)
    assert fold.test_speakers == SPEAKERS[:1] and len(fold.test_idx) == 3
    with pytest.raises(ValueError, match="'rename' holds a bad pattern"):
        fold_names({"kind": "split_files", "dir": str(root), "rename": {"(": ""}})


def test_fold_files_take_emobox_names_and_plain_ones_and_refuse_two_of_a_role(tmp_path):
    from mmder.data.split_files import fold_files

    folder = tmp_path / "fold_1"
    folder.mkdir()
    for name in ("emodb_train_fold_1.jsonl", "emodb_train_fold1.jsonl", "emodb_test_fold_1.jsonl", "x.json"):
        (folder / name).write_text("")  # EmoBox's emodb holds both spellings; the .json copies are not lists
    assert {r: p.name for r, p in fold_files(folder, 1).items()} == {
        "train": "emodb_train_fold_1.jsonl",
        "test": "emodb_test_fold_1.jsonl",
    }
    plain = tmp_path / "fold_2"
    plain.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        (plain / name).write_text("")
    assert sorted(fold_files(plain, 2)) == ["test", "train", "valid"]
    (plain / "other_test_fold_2.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds 2 test lists"):
        fold_files(plain, 2)
