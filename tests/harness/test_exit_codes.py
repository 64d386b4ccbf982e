"""Every exit code named once (harness.driver.outcome.ExitCode): the table in docs/running.md, `mmder sweep
--help` and the outcome of a sweep or a pre-training all come from it."""

from __future__ import annotations

import re
import signal

from sweep_helpers import ROOT

from harness.driver.outcome import MEANINGS, SIGNAL_CODES, SIGNAL_MEANING, ExitCode, SweepOutcome, help_text


def test_the_documented_table_is_the_enum():
    text = (ROOT / "docs" / "running.md").read_text()
    rows = dict(re.findall(r"^\| ([0-9][0-9 /]*) \| (.+) \|$", text, re.M))
    expected = {str(int(code)): meaning for code, meaning in MEANINGS.items()}
    expected[" / ".join(str(int(c)) for c in SIGNAL_CODES)] = SIGNAL_MEANING
    assert rows == expected


def test_help_names_every_code():
    said = help_text()
    for code in [*MEANINGS, *SIGNAL_CODES]:
        assert re.search(rf"\b{int(code)}\b", said), code


def test_an_outcome_maps_to_one_code_in_order_of_gravity():
    assert SweepOutcome().exit_code == ExitCode.OK
    assert SweepOutcome(refused={"k": "host b"}).exit_code == ExitCode.REFUSED == 3  # a refused pretrain too
    assert SweepOutcome(failed=["k"], refused={"j": "b"}).exit_code == ExitCode.CELL_FAILED
    assert SweepOutcome(failed=["k"], signal=signal.SIGTERM).exit_code == 143
    assert SweepOutcome(error="Traceback", signal=signal.SIGINT).exit_code == ExitCode.SWEEP_FAILED
