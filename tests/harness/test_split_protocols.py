"""Split files and cross-corpus protocols in an experiment: checked before any work, keyed by what
they are (the lists' digest, the test corpus and its label map), and swept end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli.main import main
from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells, expand_pretrain_cells

ROOT = Path(__file__).resolve().parents[2]
SPEAKERS = ["spk01", "spk02", "spk03", "spk04"]
CLASSES = ["frown-oo", "frown-ee", "smile-oo", "smile-ee", "open-oo", "open-ee"]  # the synthetic corpus's
# a second corpus with other names for its classes; "bored" has no counterpart and is dropped
OTHER = {"frown-oo": "angry", "frown-ee": "disgust", "smile-oo": "happy", "smile-ee": "surprise"}
OTHER.update({"open-oo": "fear", "open-ee": "bored"})
LABEL_MAP = {theirs: ours for ours, theirs in OTHER.items() if theirs != "bored"}


def placeholder_corpus(root: Path, labels: list[str], speakers: list[str] = SPEAKERS) -> Path:
    """A manifest corpus of empty files: enough to list it (validate never decodes)."""
    (root / "audio").mkdir(parents=True)
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clip_id", "speaker", "label", "video", "audio"])
        for s in speakers:
            for label in labels:
                clip = f"{s}_{label}_00"
                (root / "audio" / f"{clip}.wav").write_bytes(b"")
                w.writerow([clip, s, label, "", f"audio/{clip}.wav"])
    return root


def emobox_lists(root: Path, folds: dict[int, dict[str, list[str]]], corpus: str = "synth") -> Path:
    """EmoBox's layout for the synthetic corpus's clip ids (<speaker>_<class>_<rep>), one clip per class."""
    for n, roles in folds.items():
        folder = root / f"fold_{n}"
        folder.mkdir(parents=True)
        for role, speakers in roles.items():
            lines = [
                json.dumps({"key": f"{corpus}-{s}_{c}_00", "wav": f"wav/{s}_{c}_00.wav", "emo": c.upper()})
                for s in speakers
                for c in CLASSES
            ]
            (folder / f"{corpus}_{role}_fold_{n}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "label_map.json").write_text(json.dumps({c.upper(): c for c in CLASSES}))
    return root


FOLDS = {
    1: {"train": ["spk02", "spk03"], "valid": ["spk04"], "test": ["spk01"]},
    2: {"train": ["spk01", "spk02"], "test": ["spk03", "spk04"]},
}


def experiment(tmp_path: Path, datasets: list[dict], **sections: object) -> Path:
    data = {
        "name": "protocols",
        "datasets": datasets,
        "grid": {"settings": ["audio"], "seeds": [0]},
        "preprocess": {"image_size": 32},
        "model": {"size": "micro"},
        "training": {"epochs": 2, "batch_size": 4, "eval_batch_size": 8, "lr": 1e-3, "warmup_epochs": 0},
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1, "max_failures": 0},
        **sections,
    }
    path = tmp_path / "exp" / "protocols.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def split_dataset(root: str | None = None, lists: str = "splits") -> dict:
    ds: dict = {"corpus": "manifest", "name": "split", "protocol": {"kind": "split_files", "dir": lists}}
    if root:
        ds["root"] = root
    return ds


def cross_datasets(other_root: str, labels: dict = LABEL_MAP) -> list[dict]:
    return [
        {
            "corpus": "synthetic",
            "name": "synth",
            "synthetic": {"clips_per_class": 1, "speakers": 2, "seed": 0},
            "protocol": {"kind": "cross_corpus", "test": "other", "labels": dict(labels)},
        },
        {"corpus": "manifest", "name": "other", "root": other_root, "folds": []},
    ]


def validate(tmp_path: Path, path: Path, capsys) -> tuple[int, str, str]:
    code = main(["validate", str(path), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------ quick


def test_split_files_are_read_relative_to_the_experiment_and_name_the_folds(tmp_path, capsys):
    placeholder_corpus(tmp_path / "corpus", CLASSES)
    emobox_lists(tmp_path / "exp" / "splits", FOLDS)
    path = experiment(tmp_path, [split_dataset(str(tmp_path / "corpus"))])
    code, out, err = validate(tmp_path, path, capsys)
    assert code == 0, err
    cells = expand_cells(load_experiment(path))
    assert [c.fold_name for c in cells] == ["fold_1", "fold_2"]
    assert Path(cells[0].dataset_config.protocol["dir"]) == tmp_path / "exp" / "splits"
    # the dry run needs no corpus: the fold names come from the lists' folders
    assert main(["sweep", str(path), "--dry-run", "--output", str(tmp_path / "dry")]) == 0
    assert "fold_2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            "drop spk01",
            r"6 clip(s) named in the lists are not in the corpus, e.g. fold_1/synth_test_fold_1.jsonl:1",
        ),
        ("leak spk01", "test speaker(s) ['spk01'] also appear in its train list"),
    ],
)
def test_split_files_naming_a_missing_clip_or_a_training_test_speaker_stop_before_work(
    tmp_path, capsys, edit, needle
):
    speakers = SPEAKERS[1:] if edit == "drop spk01" else SPEAKERS
    placeholder_corpus(tmp_path / "corpus", CLASSES, speakers)
    folds = {1: {"train": ["spk01", "spk02"] if edit == "leak spk01" else ["spk02"], "test": ["spk01"]}}
    emobox_lists(tmp_path / "exp" / "splits", folds)
    path = experiment(tmp_path, [split_dataset(str(tmp_path / "corpus"))])
    code, _, err = validate(tmp_path, path, capsys)
    assert code == 2 and "datasets[0].protocol:" in err and needle in err, err
    out = tmp_path / "sweep-out"
    assert main(["sweep", str(path), "--output", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not (out / "ray").exists() and not (out / "cache").exists(), "nothing may start before the check"


def test_split_files_folder_that_is_not_there_names_the_key(tmp_path, capsys):
    path = experiment(tmp_path, [split_dataset(str(tmp_path / "corpus"), lists="nowhere")])
    code, _, err = validate(tmp_path, path, capsys)
    assert code == 2 and "datasets[0].protocol" in err and "nowhere' is not a folder" in err, err


def test_split_files_validation_lists_and_validation_speakers_are_not_both_allowed(tmp_path, capsys):
    emobox_lists(tmp_path / "exp" / "splits", FOLDS)
    training = {"epochs": 2, "validation_speakers": 1}
    path = experiment(tmp_path, [split_dataset(str(tmp_path / "corpus"))], training=training)
    code, _, err = validate(tmp_path, path, capsys)
    assert code == 2 and "training.validation_speakers" in err and "hold validation lists" in err, err


def test_split_files_keys_follow_the_lists_contents_not_their_folder(tmp_path):
    lists = emobox_lists(tmp_path / "exp" / "splits", FOLDS)
    keys = [c.key for c in expand_cells(load_experiment(experiment(tmp_path, [split_dataset("c")])))]
    moved = tmp_path / "exp" / "elsewhere"
    shutil.copytree(lists, moved)
    path = experiment(tmp_path, [split_dataset("c", lists="elsewhere")])
    assert [c.key for c in expand_cells(load_experiment(path))] == keys, "a moved folder is the same split"
    test_list = moved / "fold_2" / "synth_test_fold_2.jsonl"
    test_list.write_text("\n".join(test_list.read_text().splitlines()[:-1]) + "\n")
    edited = [c.key for c in expand_cells(load_experiment(path))]
    # one digest of every list: an edit makes all the dataset's cells new (the safe side)
    assert not set(edited) & set(keys), "an edited list makes new cells"


def test_existing_protocols_keep_their_cell_keys():
    """A finished result's key must not move: these were computed before split files existed."""
    known = {
        "quickstart.yaml": ("synthetic-video-f0-s0-fce54fcff3", "synthetic-RFAS-f1-s0-9d028e9db0"),
        "paper.yaml": ("ravdess-video-f0-s0-808f9fb002", "iemocap-RFAS-f4-s0-30b5fcd607"),
        "manifest-example.yaml": ("manifest-audio-f0-s0-564d013156", "manifest-FSLF-f1-s0-2a4b39771c"),
        "ravdess-audio.yaml": (
            "ravdess-audio-f0-s0-1f897b2ec1",
            "ravdess-audio-egemaps-svm-f2-s0-2dd2ed3586",
        ),
    }
    for name, (first, last) in known.items():
        keys = [c.key for c in expand_cells(load_experiment(ROOT / "experiments" / name))]
        assert (keys[0], keys[-1]) == (first, last), name


def test_cross_corpus_is_checked_and_says_what_it_drops(tmp_path, capsys):
    placeholder_corpus(tmp_path / "other", list(OTHER.values()), ["x1", "x2"])
    path = experiment(tmp_path, cross_datasets(str(tmp_path / "other")))
    code, out, err = validate(tmp_path, path, capsys)
    assert code == 0, err
    (cell,) = expand_cells(load_experiment(path))  # the test-only dataset has no cells of its own
    assert cell.fold_name == "cross-other" and [d.label for d in cell.datasets] == ["synth", "other"]
    assert expand_pretrain_cells(load_experiment(path)) == [], "nothing may start from an MAE encoder"


def test_cross_corpus_notes_dropped_classes_when_both_corpora_are_listed(tmp_path, capsys):
    placeholder_corpus(tmp_path / "other", list(OTHER.values()), ["x1", "x2"])
    placeholder_corpus(tmp_path / "synth", CLASSES, ["spk01", "spk02"])
    datasets = cross_datasets(str(tmp_path / "other"))
    datasets[0].update(corpus="manifest", root=str(tmp_path / "synth"))
    datasets[0].pop("synthetic")
    code, out, err = validate(tmp_path, experiment(tmp_path, datasets), capsys)
    assert code == 0, err
    assert (
        "synth: cross_corpus: 2 test clip(s) of 'other' dropped, their class is not in 'labels': bored (2)"
        in out
    )


def test_cross_corpus_on_a_test_corpus_not_generated_yet_is_checked_later(tmp_path, capsys):
    placeholder_corpus(tmp_path / "train", CLASSES, ["spk01", "spk02"])
    datasets = [
        {
            "corpus": "manifest",
            "name": "train",
            "root": str(tmp_path / "train"),
            "protocol": {"kind": "cross_corpus", "test": "synthetic", "labels": {c: c for c in CLASSES}},
        },
        {"corpus": "synthetic", "folds": []},  # generated by the sweep, under its output
    ]
    code, _, err = validate(tmp_path, experiment(tmp_path, datasets), capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("edit", "key", "needle"),
    [
        (
            lambda d: d[0]["protocol"].update(test="nope"),
            "datasets[0].protocol.test",
            "'nope' is not another",
        ),
        (lambda d: d[0]["protocol"].update(test="synth"), "datasets[0].protocol.test", "allowed: other"),
        (lambda d: d[0]["protocol"].update(labels={}), "datasets[0].protocol", "'labels' must map"),
        (
            lambda d: d[0]["protocol"]["labels"].update(calm="frown-oo"),
            "datasets[0].protocol",
            "maps class(es) ['calm'] that dataset 'other' does not have",
        ),
        (
            lambda d: d[0]["protocol"]["labels"].update(angry="furious"),
            "datasets[0].protocol",
            "maps to class(es) ['furious'] that the training corpus has no clip of",
        ),
    ],
)
def test_cross_corpus_mistakes_name_the_key(tmp_path, capsys, edit, key, needle):
    placeholder_corpus(tmp_path / "other", list(OTHER.values()), ["x1", "x2"])
    placeholder_corpus(tmp_path / "synth", CLASSES, ["spk01", "spk02"])
    datasets = cross_datasets(str(tmp_path / "other"))
    datasets[0].update(corpus="manifest", root=str(tmp_path / "synth"))
    datasets[0].pop("synthetic")
    edit(datasets)
    code, _, err = validate(tmp_path, experiment(tmp_path, datasets), capsys)
    assert code == 2 and f"{key}:" in err and needle in err, err


def test_cross_corpus_refuses_what_it_does_not_run_yet(tmp_path, capsys):
    path = experiment(tmp_path, cross_datasets("other"), grid={"settings": ["audio", "audio-egemaps-svm"]})
    code, _, err = validate(tmp_path, path, capsys)
    assert code == 2 and "grid.settings:" in err and "cross_corpus protocol yet" in err, err


def test_cross_corpus_keys_hash_the_test_corpus_and_label_map_not_its_name(tmp_path):
    def key(datasets: list[dict]) -> str:
        (cell,) = expand_cells(load_experiment(experiment(tmp_path, datasets)))
        return cell.key

    base = key(cross_datasets("other"))
    renamed = cross_datasets("other")
    renamed[1]["name"] = "elsewhere"
    renamed[0]["protocol"]["test"] = "elsewhere"
    assert key(renamed) == base, "a display name is operational"
    assert key(cross_datasets("moved-root")) == base, "so is where the test corpus lies"
    fewer = {k: v for k, v in LABEL_MAP.items() if k != "fear"}
    assert key(cross_datasets("other", labels=fewer)) != base, "the label map changes the test set"
    other_options = cross_datasets("other")
    other_options[1]["options"] = {"classes": list(OTHER.values())}
    assert key(other_options) != base, "so does what the test corpus is"


# ------------------------------------------------------------------------------------------ a sweep


def other_corpus(root: Path) -> Path:
    """A second small corpus with its own class names, speakers and clip ids: the synthetic generator's
    media written as a manifest, then renamed (``bored`` has no counterpart in the first corpus)."""
    from sweep_helpers import mmder

    done = mmder("synth", str(root), "--clips-per-class", "1", "--speakers", "2", "--seed", "1")
    assert done.returncode == 0, done.stderr
    manifest = root / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, fieldnames=["clip_id", "speaker", "label", "video", "audio"], extrasaction="ignore"
        )
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    **r,
                    "clip_id": f"x-{r['clip_id']}",
                    "speaker": f"x-{r['speaker']}",
                    "label": OTHER[r["label"]],
                }
            )
    return root


@pytest.mark.slow
def test_a_sweep_runs_split_files_and_cross_corpus_cells_through_the_cli(tmp_path):
    from sweep_helpers import child_runs, client_for, mmder

    from harness.tracking.tags import SELECTED_EPOCH, TAG_TEST_SPEAKERS

    emobox_lists(tmp_path / "exp" / "splits", FOLDS)
    synthetic = {"clips_per_class": 1, "speakers": 4, "seed": 0}
    split = {"corpus": "synthetic", "name": "split", "synthetic": synthetic, "folds": [0]}
    split["protocol"] = {"kind": "split_files", "dir": "splits"}
    cross = cross_datasets(str(other_corpus(tmp_path / "other")))
    cross[0]["synthetic"] = synthetic
    exp, out = experiment(tmp_path, [split, *cross]), tmp_path / "out"
    done = mmder("sweep", str(exp), "--output", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "synth: cross_corpus: 2 test clip(s) of 'other' dropped, their class is not in 'labels': bored (2)"
        in done.stdout
    )
    runs = {r.data.tags["dataset"]: r for r in child_runs(out, "protocols")}
    assert sorted(runs) == ["split", "synth"] and all(
        r.data.tags["mmder.status"] == "finished" for r in runs.values()
    )
    client = client_for(out)

    def predictions(run) -> list[dict]:
        path = client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path / run.info.run_id))
        return list(csv.DictReader(open(path)))

    # split files: fold_1 tests spk01 and chooses its epoch on the valid list (spk04)
    assert (
        runs["split"].data.tags[TAG_TEST_SPEAKERS] == "spk01" and SELECTED_EPOCH in runs["split"].data.metrics
    )
    assert {p["speaker"] for p in predictions(runs["split"])} == {"spk01"} and len(
        predictions(runs["split"])
    ) == 6
    # cross-corpus: trained on synth, tested on other's clips of the 5 mapped classes, in synth's names
    tested = predictions(runs["synth"])
    assert len(tested) == 10 and all(p["clip_id"].startswith("x-spk") for p in tested)
    assert {p["true"] for p in tested} == set(LABEL_MAP.values())
    assert runs["synth"].data.tags["fold"] == "cross-other"
    # a rerun finds both finished: their keys and data digests (both corpora for the cross cell) hold
    again = mmder("sweep", str(exp), "--output", str(out), "--dry-run")
    assert again.returncode == 0 and "0 to run, 2 finished" in again.stdout, again.stdout
