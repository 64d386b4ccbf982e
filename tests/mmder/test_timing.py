"""Start-up marks: off by default, one JSON line per mark when asked, from any process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mmder.timing import ENV, mark, mark_process_start, process_started, read_marks


def test_marks_cost_nothing_and_write_nothing_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    mark("trial_start", "k")
    assert list(tmp_path.iterdir()) == []


def test_marks_of_several_processes_land_in_one_file(tmp_path, monkeypatch):
    path = tmp_path / "timing.jsonl"
    monkeypatch.setenv(ENV, str(path))
    mark("tune_fit_start")
    code = "from mmder.timing import mark\nfor i in range(50): mark('epoch_end', 'cell-a')"
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert all(c.wait(60) == 0 for c in children)
    marks = read_marks(path)
    assert len(marks) == 1 + 150  # every line whole: none lost or interleaved
    assert {m["pid"] for m in marks if m["key"] == "cell-a"} == {c.pid for c in children}
    assert marks[0]["stage"] == "tune_fit_start" and marks[0]["key"] == ""


def test_process_start_is_before_now_and_close_to_it_for_a_fresh_process():
    code = "import time; from mmder.timing import process_started; print(time.time() - process_started())"
    age = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 0.0 <= age < 30.0  # the interpreter's own start-up, not the machine's uptime
    assert process_started() <= time.time()


def test_a_process_start_mark_is_when_the_process_began(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    mark_process_start("worker_process", "k")  # off: nothing read, nothing written
    path = tmp_path / "timing.jsonl"
    monkeypatch.setenv(ENV, str(path))
    mark_process_start("worker_process", "k")
    (got,) = read_marks(path)
    assert got["stage"] == "worker_process" and got["key"] == "k"
    assert got["t"] == pytest.approx(process_started(), abs=0.05) and got["t"] < time.time()
