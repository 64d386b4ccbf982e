"""leaderboard, compare and report through the real command line on a real (SQLite) MLflow store.

The runs are fake but shaped like a sweep's: a parent run tagged mmder.kind=sweep, one child per
cell tagged with the cell's key and mmder.status=finished, per-epoch metrics, predictions.csv and
confusion.json. One cell is left unfinished so the missing-fold path is exercised too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli.main import main

EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
ACCURACY = {"audio": 0.45, "FSLF": 0.7}
pytestmark = pytest.mark.slow  # one store: one worker (tests/conftest.py)


def write_experiment(tmp_path: Path) -> Path:
    data = {
        "name": "results-e2e",
        "datasets": [
            {
                "corpus": "ravdess",
                "name": "ravdess-speech",
                "root": str(tmp_path / "ravdess"),  # never read: nothing is trained here
                "options": {"classes": 8},
                "protocol": {"kind": "speaker_kfold", "folds": 3},
            }
        ],
        "grid": {"settings": ["audio", "FSLF"], "seeds": [0, 1]},
        "model": {"size": "tiny"},
        "training": {"epochs": 3},
    }
    path = tmp_path / "results-e2e.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _predictions(fold: int, setting: str, seed: int) -> list[dict[str, str]]:
    """RAVDESS-named test clips of the fold's 4 actors; the same clips for every setting and seed."""
    rng = np.random.default_rng([fold, seed, list(ACCURACY).index(setting)])
    rows = []
    for actor in range(4 * fold + 1, 4 * fold + 5):
        for e, emotion in enumerate(EMOTIONS):
            for rep in (1, 2):
                right = rng.random() < ACCURACY[setting]
                pred = emotion if right else EMOTIONS[(e + 1 + rng.integers(7)) % 8]
                rows.append(
                    {
                        "clip_id": f"03-01-{e + 1:02d}-02-01-{rep:02d}-{actor:02d}",
                        "speaker": f"Actor_{actor:02d}",
                        "true": emotion,
                        "predicted": pred,
                    }
                )
    return rows


def fill_store(experiment: Path, output: Path, skip: set[tuple[str, int, int]]) -> None:
    from mlflow.tracking import MlflowClient

    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells

    spec = load_experiment(experiment)
    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    exp_id = client.create_experiment(spec.name, artifact_location=(output / "artifacts").as_uri())
    parent = client.create_run(
        exp_id, run_name=spec.name, tags={"mmder.kind": "sweep", "mmder.sweep": spec.name}
    )
    art = output / "staging"
    for cell in expand_cells(spec):
        if (cell.setting, cell.fold, cell.seed) in skip:
            continue
        tags = {
            "mmder.cell": cell.key,
            "mmder.kind": "cell",
            "mlflow.parentRunId": parent.info.run_id,
            "mmder.device_count": "2",
        }
        run_id = client.create_run(exp_id, run_name=cell.key, tags=tags).info.run_id
        preds = _predictions(cell.fold, cell.setting, cell.seed)
        true = np.array([p["true"] for p in preds])
        pred = np.array([p["predicted"] for p in preds])
        war = 100 * float(np.mean(true == pred))
        uar = 100 * float(np.mean([np.mean(pred[true == e] == e) for e in EMOTIONS]))
        for epoch in range(3):
            client.log_metric(run_id, "train_loss", 2.0 - 0.5 * epoch, step=epoch)
            client.log_metric(run_id, "test_loss", 2.1 - 0.3 * epoch, step=epoch)
            client.log_metric(run_id, "war", war * (epoch + 1) / 3, step=epoch)
        for name, value in {
            "final_war": war,
            "final_uar": uar,
            "wall_seconds": 900.0,
            "train_clips_per_s": 42.0,
        }.items():
            client.log_metric(run_id, name, value)
        art.mkdir(parents=True, exist_ok=True)
        header = "clip_id,speaker,true,predicted\n"
        (art / "predictions.csv").write_text(header + "".join(",".join(p.values()) + "\n" for p in preds))
        matrix = [[int(np.sum((true == t) & (pred == p))) for p in EMOTIONS] for t in EMOTIONS]
        (art / "confusion.json").write_text(json.dumps({"classes": EMOTIONS, "matrix": matrix}))
        client.log_artifacts(run_id, str(art))
        client.set_tag(run_id, "mmder.status", "finished")
        client.set_terminated(run_id, "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    tmp = tmp_path_factory.mktemp("results")
    experiment = write_experiment(tmp)
    output = tmp / "out"
    output.mkdir()
    fill_store(experiment, output, skip={("audio", 2, 1)})
    yield experiment, output
    mp.undo()


def test_leaderboard_with_intervals_missing_cell_and_references(store, capsys):
    experiment, output = store
    assert main(["leaderboard", str(experiment), "--output", str(output), "--references", "--per-class"]) == 0
    text = capsys.readouterr().out
    assert "ravdess-speech  (ravdess, 8 classes, 3 folds, trained from scratch, 2 seeds)" in text
    assert "3/3 !1 missing" in text, text  # audio: fold 2 has seed 0 only
    assert "MultiMAE-DER FSLF" in text and "classes 8 vs 7; folds 3 vs 1 hold-out split" in text
    assert main(["leaderboard", str(experiment), "--output", str(output), "--format", "json"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["audio"]["runs"] == 5 and rows["audio"]["missing"] == 1 and rows["FSLF"]["n"] == 6
    assert rows["FSLF"]["uar_lo"] < rows["FSLF"]["uar_mean"] < rows["FSLF"]["uar_hi"]
    assert rows["FSLF"]["device_hours"] == pytest.approx(6 * 900 * 2 / 3600)
    assert rows["FSLF"]["war_pooled"] == pytest.approx(rows["FSLF"]["war_mean"])  # equal folds


def test_compare_two_settings_and_all_pairs(store, capsys):
    experiment, output = store
    assert (
        main(["compare", str(experiment), "FSLF", "audio", "--output", str(output), "--resamples", "500"])
        == 0
    )
    text = capsys.readouterr().out
    assert "5 (fold, seed) pairs, 12 test speakers, 320 paired test predictions" in text
    assert (
        "seed+speaker level: paired two-level bootstrap over seeds and 12 test speakers: [95% seed+spk] ["
        in text
    )
    assert "left out (finished for one setting only): FSLF fold3 s1" in text
    assert "clip level, assumes independent clips: McNemar exact" in text and "paired t p" in text
    assert main(["compare", str(experiment), "--all", "--output", str(output), "--resamples", "200"]) == 0
    assert "BH-corrected speaker-level p" in capsys.readouterr().out
    assert (
        main(["compare", str(experiment), "FSLF", "audio", "--output", str(output), "--format", "json"]) == 0
    )
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert (row["a"], row["b"], row["clusters"], row["unit"]) == ("FSLF", "audio", 12, "speaker")
    assert main(["compare", str(experiment), "FSLF", "video", "--output", str(output)]) == 2


def test_report_is_written_and_logged_to_the_sweep_run(store, capsys):
    from mlflow.tracking import MlflowClient

    experiment, output = store
    assert main(["report", str(experiment), "--output", str(output)]) == 0
    report = output / "report.html"
    page = report.read_text()
    assert page.count("data:image/svg+xml;base64,") >= 4  # bars, confusion, curves, compare matrix
    assert "Provenance" in page and "mmder.device_count=2" in page and "(not finished)" in page
    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    exp = client.get_experiment_by_name("results-e2e")
    parent = client.search_runs([exp.experiment_id], "tags.`mmder.kind` = 'sweep'")[0]
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report.html",
        "ravdess-speech_bars.svg",
        "ravdess-speech_bars.png",
        "ravdess-speech_confusion.svg",
    } <= logged
    assert "figures logged" in capsys.readouterr().out


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_report_renders_in_a_headless_browser(store, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium); CI installs it")
    experiment, output = store
    report = output / "report.html"
    if not report.exists():
        assert main(["report", str(experiment), "--output", str(output), "--no-mlflow"]) == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--screenshot={shot}",
            "--window-size=1400,3000",
            report.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    import matplotlib.image as mpimg

    assert shot.is_file()
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05, "the screenshot is blank"


def test_results_in_python_as_dataframes(store, capsys):
    from harness.results import api

    experiment, output = store
    cells = api.cells(experiment, output)
    assert len(cells) == 12 and cells["key"].is_unique  # 2 settings x 3 folds x 2 seeds
    missing = cells[~cells["finished"]]
    assert list(zip(missing["setting"], missing["fold"], missing["seed"], strict=True)) == [("audio", 2, 1)]
    assert missing["war"].isna().all() and missing["run_id"].isna().all()
    done = cells[cells["finished"]]
    assert (done["config/training.epochs"] == 3).all() and (done["mmder.device_count"] == "2").all()
    assert "config/setting" not in cells  # the grid keys are columns of their own
    expected = [_predictions(r.fold, r.setting, r.seed) for r in done.itertuples()]
    wars = [100 * np.mean([p["true"] == p["predicted"] for p in e]) for e in expected]
    np.testing.assert_allclose(done["war"].to_numpy(dtype=float), wars)
    pred = api.predictions(experiment, output)
    assert len(pred) == 11 * 64 and list(pred.columns[:5]) == ["key", "dataset", "setting", "fold", "seed"]
    assert set(pred["speaker"]) == {f"Actor_{a:02d}" for a in range(1, 13)}
    board = api.leaderboard(experiment, output)
    assert main(["leaderboard", str(experiment), "--output", str(output), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert board["war_spk_lo"].tolist() == pytest.approx([r["war_spk_lo"] for r in rows], rel=1e-12)
