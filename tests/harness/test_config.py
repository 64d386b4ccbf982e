"""Experiment files: every mistake stops `mmder validate` with its dotted key, before anything exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli.main import main
from harness.experiment.errors import ConfigError
from harness.experiment.loading import load_experiment
from harness.plan.cells import CellJob, expand_cells
from harness.tracking.places import resolve_uri

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
PAPER = ROOT / "experiments" / "paper.yaml"
RAVDESS_AUDIO = ROOT / "experiments" / "ravdess-audio.yaml"
SPEECH = ROOT.parent / "shared" / "data" / "ravdess-speech-16k"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def ravdess_audio(tmp_path: Path) -> dict:
    data = yaml.safe_load(RAVDESS_AUDIO.read_text())
    data["datasets"][0]["root"] = str(SPEECH)
    return data


def validate(tmp_path: Path, path: Path, capsys) -> tuple[int, str]:
    out = tmp_path / "out"
    code = main(["validate", str(path), "--output", str(out)])
    err = capsys.readouterr().err
    assert not out.exists(), "validate must create nothing (no MLflow store, no cache, no Ray folder)"
    return code, err


BAD_EDITS = [
    ("unknown key", lambda d: d["training"].update(epoch=3), "training.epoch", "epochs"),
    ("unknown section", lambda d: d.update(trainig={}), "trainig", "training"),
    ("wrong type", lambda d: d["training"].update(lr="fast"), "training.lr", "number"),
    (
        "negative epochs",
        lambda d: d["training"].update(epochs=-1),
        "training.epochs",
        "greater than or equal to 1",
    ),
    ("image size", lambda d: d["preprocess"].update(image_size=70), "preprocess.image_size", "64 or 80"),
    (
        "partial deeper than tiny",
        lambda d: d["training"].update(recipe="partial:99"),
        "training.recipe",
        "partial:4",
    ),
    (
        "unknown corpus option",
        lambda d: d["datasets"][0].update(options={"bogus": 1}),
        "datasets[0].options.bogus",
        "unknown key",
    ),
    ("unknown corpus", lambda d: d["datasets"][0].update(corpus="nope"), "datasets[0].corpus", "synthetic"),
    ("unknown setting", lambda d: d["grid"].update(settings=["video", "XFAS"]), "grid.settings", "FSLF"),
    ("empty settings", lambda d: d["grid"].update(settings=[]), "grid.settings", "at least 1"),
    (
        "explicit protocol with an unknown key",
        lambda d: d["datasets"][0].update(
            protocol={"kind": "explicit", "train": ["s00"], "test": ["s01"], "tset": 1}
        ),
        "datasets[0].protocol",
        "'tset'",
    ),
    (
        "malformed tracking uri",
        lambda d: d.update(tracking={"uri": "postgres://u@db/mlflow"}),
        "tracking.uri",
        "postgresql://",
    ),
    (
        "tracking uri without a host",
        lambda d: d.update(tracking={"uri": "http:///x"}),
        "tracking.uri",
        "no host",
    ),
    ("zero-3 with an encoder export", lambda d: d.update(pretrain={"zero_stage": 3}), "pretrain", "export"),
    ("model size", lambda d: d["model"].update(size="giant"), "model.size", "large"),
]


@pytest.mark.parametrize(("what", "edit", "key", "allowed"), BAD_EDITS, ids=[b[0] for b in BAD_EDITS])
def test_validate_exits_2_naming_the_key(tmp_path, capsys, what, edit, key, allowed):
    data = quickstart()
    edit(data)
    code, err = validate(tmp_path, write(tmp_path, data), capsys)
    assert code == 2, err
    assert f": {key}" in err and allowed in err, err


def test_ravdess_corpus_options_are_typed(tmp_path, capsys):
    data = ravdess_audio(tmp_path)
    data["datasets"][0]["options"]["classes"] = 6
    code, err = validate(tmp_path, write(tmp_path, data), capsys)
    assert code == 2 and "datasets[0].options.classes" in err and "7" in err and "8" in err, err


def test_a_video_setting_on_an_audio_only_corpus_is_refused(tmp_path, capsys):
    data = ravdess_audio(tmp_path)
    data["grid"]["settings"] = ["video"]
    code, err = validate(tmp_path, write(tmp_path, data), capsys)
    assert code == 2 and "grid.settings" in err and "'video' needs video" in err, err


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ndatasets: [\n  - corpus: synthetic\n")
    code, err = validate(tmp_path, path, capsys)
    assert code == 2 and "not valid YAML" in err and "exp.yaml:" in err, err


def test_duplicated_yaml_key_is_an_error_not_last_wins(tmp_path, capsys):
    text = QUICKSTART.read_text().replace("  epochs: 15\n", "  epochs: 15\n  epochs: 3\n")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    code, err = validate(tmp_path, path, capsys)
    assert code == 2 and "duplicated key" in err and "epochs" in err, err


def test_a_file_that_is_not_utf8_or_a_directory_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(QUICKSTART.read_bytes().replace(b"description: Synthetic", b"description: Synth\xe9tic"))
    for command in (["validate", str(path)], ["sweep", str(path), "--dry-run", "--output", str(tmp_path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "not UTF-8" in err and "offset" in err and "latin1.yaml:" in err, err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    folder = tmp_path / "x.yaml"
    folder.mkdir()
    assert main(["validate", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "no such file" not in err, err


def test_errors_name_the_file_and_line(tmp_path):
    text = QUICKSTART.read_text().replace("  lr: 1.0e-3\n", "  lr: fast\n")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    line = text.splitlines().index("  lr: fast") + 1
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert err.value.key == "training.lr" and f"exp.yaml:{line}" in str(err.value)


@pytest.mark.parametrize(
    ("protocol", "needle"),
    [
        ({"kind": "explicit", "train": ["Actor_01", "Actor_02"], "test": ["Actor_99"]}, "Actor_99"),
        ({"kind": "speaker_kfold", "folds": 5}, "speaker"),
    ],
    ids=["explicit protocol naming an unknown speaker", "5 folds over 4 speakers"],
)
@pytest.mark.skipif(not SPEECH.is_dir(), reason=f"shared RAVDESS sample not found at {SPEECH}")
def test_listing_checks_fail_before_ray_starts(tmp_path, capsys, protocol, needle):
    root = tmp_path / "four-actors"
    root.mkdir()
    for actor in ("Actor_01", "Actor_02", "Actor_03", "Actor_04"):
        (root / actor).symlink_to(SPEECH / actor)
    data = ravdess_audio(tmp_path)
    data["datasets"][0].update(root=str(root), protocol=protocol)
    path = write(tmp_path, data)
    code, err = validate(tmp_path, path, capsys)
    assert code == 2 and "datasets[0].protocol" in err and needle in err, err
    out = tmp_path / "sweep-out"
    assert main(["sweep", str(path), "--output", str(out)]) == 2
    assert "datasets[0].protocol" in capsys.readouterr().err
    assert not (out / "ray").exists() and not (out / "cache").exists(), "nothing may start before the check"


def test_an_empty_corpus_root_names_the_root_and_why(tmp_path, capsys):
    root = tmp_path / "not-ravdess"
    (root / "Actor_01").mkdir(parents=True)
    (root / "Actor_01" / "hello.wav").write_bytes(b"")
    data = ravdess_audio(tmp_path)
    data["datasets"][0]["root"] = str(root)
    code, err = validate(tmp_path, write(tmp_path, data), capsys)
    assert code == 2 and "datasets[0].root" in err and str(root) in err and "saw 1 file" in err, err
    assert "Traceback" not in err


def test_shipped_experiments_validate(tmp_path, capsys):
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        assert main(["validate", str(path), "--output", str(tmp_path / path.stem)]) == 0, path
    out = capsys.readouterr().out
    assert "lr " in out and "global batch" in out


def test_the_worker_trains_with_the_validated_model_and_its_defaults(tmp_path):
    """One source of defaults: change one in mmder/config.py and it reaches the worker's job unchanged."""
    import harness.experiment.config as config
    from harness.experiment.search import SearchConfig
    from mmder.config import TrainingConfig

    field = TrainingConfig.model_fields["mixup_switch_prob"]
    original = field.default

    def rebuild() -> None:  # the compiled validators hold the default: rebuild every model embedding it
        TrainingConfig.model_rebuild(force=True)
        SearchConfig.model_rebuild(force=True)
        config.ExperimentConfig.model_rebuild(force=True)

    field.default = 0.25
    rebuild()
    try:
        spec = load_experiment(QUICKSTART)
        assert spec.training.mixup_switch_prob == 0.25
        cell = expand_cells(spec)[0]
        job = CellJob(
            cell=cell,
            cache_paths={},
            tracking_uri=resolve_uri(None, tmp_path),
            experiment_id="1",
            parent_run_id="p",
            storage_path=str(tmp_path),
            resources=spec.resources,
        )
        # what Tune carries: plain JSON; what the worker reads: the model validated back
        received = CellJob.model_validate(json.loads(json.dumps(job.model_dump(mode="json"))))
        assert isinstance(received.cell.training, TrainingConfig)
        assert received.cell.training.mixup_switch_prob == 0.25
        assert received.cell.training == spec.training.model_copy(update={"precision": "fp32"})
        with pytest.raises(Exception, match="extra"):
            CellJob.model_validate({**job.model_dump(mode="json"), "surprise": 1})
    finally:  # later tests (and their subprocesses) must see the real default again
        field.default = original
        rebuild()
    assert load_experiment(QUICKSTART).training.mixup_switch_prob == original


def test_quickstart_grid_is_settings_times_folds_with_stable_unique_keys():
    cells = expand_cells(load_experiment(QUICKSTART))
    assert len(cells) == 8 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert [c.key for c in expand_cells(load_experiment(QUICKSTART))] == [c.key for c in cells]


def test_key_changes_with_what_changes_results_only(tmp_path):
    base = {c.key for c in expand_cells(load_experiment(QUICKSTART))}
    data = quickstart()
    data["resources"]["max_concurrent_trials"] = 7
    data["description"] = "other words"
    data["training"]["data_workers"] = 2
    data["training"]["eval_batch_size"] = 8
    assert {c.key for c in expand_cells(load_experiment(write(tmp_path, data)))} == base
    data["training"]["lr"] = 2e-3
    assert not base & {c.key for c in expand_cells(load_experiment(write(tmp_path, data)))}


def test_speaker_norm_renames_every_cell_but_keeps_the_cache(tmp_path):
    from harness.plan.cells import expand_pretrain_cells

    data = quickstart()
    data["grid"]["settings"] = ["audio", "audio-egemaps-svm"]
    data["model"]["pretrained"] = "mae"
    plain = load_experiment(write(tmp_path, data))
    data["preprocess"]["speaker_norm"] = "band"
    normed = load_experiment(write(tmp_path, data))
    # deep cells, pre-trainings and the baseline (its features get speaker-normalised too) are new results
    assert not {c.key for c in expand_cells(plain)} & {c.key for c in expand_cells(normed)}
    assert not {c.key for c in expand_pretrain_cells(plain)} & {c.key for c in expand_pretrain_cells(normed)}
    assert plain.preprocess.fingerprint() == normed.preprocess.fingerprint()


def test_paper_grid_dry_runs_without_data_gpu_or_ray(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli.main",
            "sweep",
            str(PAPER),
            "--dry-run",
            "--list",
            "--output",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("run ")]
    # RAVDESS: the paper's single hold-out split; CREMA-D: 5 folds; IEMOCAP: 5 sessions.
    assert len(lines) == 8 * (1 + 5 + 5)
    for dataset in ("ravdess", "cremad", "iemocap"):
        assert sum(f" {dataset} / " in ln for ln in lines) == 8 * (1 if dataset == "ravdess" else 5)
    assert "88 cells: 88 to run, 0 finished" in proc.stdout
    assert "grid: 3 datasets x 8 settings x 1-5 folds x 1 seed" in proc.stdout
    assert not (tmp_path / "p").exists()


def test_schema_file_is_current_validates_every_experiment_and_rejects_a_typo(tmp_path, capsys):
    import jsonschema

    assert main(["schema", "--file", str(tmp_path / "schema.json")]) == 0
    schema = json.loads((tmp_path / "schema.json").read_text())
    shipped = ROOT / "experiments" / "experiment.schema.json"
    regenerate = "run `mmder schema -o experiments/experiment.schema.json`"
    assert json.loads(shipped.read_text()) == schema, regenerate
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        assert path.read_text().startswith("# yaml-language-server: $schema=./experiment.schema.json"), path
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    data = quickstart()
    data["training"]["epoch"] = 3
    with pytest.raises(jsonschema.ValidationError, match="epoch"):
        jsonschema.validate(data, schema)


def test_help_lists_every_command_and_each_command_has_help(capsys):
    # a '%' in one command's help ("95 % t interval") made argparse crash on `mmder --help`
    from harness.cli.main import build_parser

    COMMANDS = build_parser()[1]

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert "95 % t interval" in listed
    for command in COMMANDS:
        assert command in listed
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0, command


def test_a_reader_that_leaves_early_gets_no_traceback():
    # `mmder validate x.yaml | head -3` printed a BrokenPipeError traceback into the terminal
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", "validate", str(QUICKSTART)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
