"""The local cluster stack (cluster/local-stack.sh) started for real, once per test session.

PostgreSQL, an MLflow server with basic auth and a Ray head + two worker nodes, all on 127.0.0.1 with
their own ports and temp folders; `stop` afterwards, and no process of the stack may outlive it.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "cluster" / "local-stack.sh"
sys.path.insert(0, str(ROOT / "tests" / "harness"))


def pg_ctl() -> str | None:
    return shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))), None)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_base() -> int:
    """A base port whose stack ports (base..base+40) and worker port ranges (base+100..+700) are free."""
    for _ in range(50):
        base = random.randrange(20000, 55000, 1000)
        if all(_free(p) for p in [*range(base, base + 40), *range(base + 100, base + 700, 7)]):
            return base
    raise RuntimeError("no free port range for the stack")


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]  # os.environ plus the stack's client settings (source $dir/env)
    client_env: dict[str, str]  # only the stack's client settings

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(STACK), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def processes(self) -> list[str]:
        """Processes whose command line names the stack's folder."""
        found = []
        for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
            if cmdline == f"/proc/{os.getpid()}/cmdline":
                continue
            try:
                text = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(self.dir) in text:
                found.append(text[:200])
        return found

    def secrets(self) -> list[str]:
        """The passwords and the Ray token (the MLflow user name is no secret: it is `mmder` by default)."""
        public = {"basic_auth.ini", "mlflow_username"}
        return [p.read_text().strip() for p in (self.dir / "secrets").iterdir() if p.name not in public]


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        for item in line.removeprefix("export ").split():
            key, _, value = item.partition("=")
            out[key] = value
    return out


@pytest.fixture(scope="module")  # up only while its tests run: idle, it would slow the rest of the suite
def stack():
    if pg_ctl() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="mmst-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = dict(
        os.environ,
        MMDER_STACK_DIR=str(folder),
        MMDER_STACK_PORT=str(free_base()),
        MMDER_PYTHON=sys.executable,
    )
    started = subprocess.run(
        ["bash", str(STACK), "start"], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        client = read_env(folder / "env")
        running = Stack(folder, {**env, **client}, client)
        yield running
    finally:
        stopped = subprocess.run(
            ["bash", str(STACK), "stop"], env=env, capture_output=True, text=True, timeout=300
        )
        leftovers = Stack(folder, env, {}).processes()
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not leftovers, f"processes outlived `local-stack.sh stop`: {leftovers}"
        assert not folder.exists()


@pytest.fixture
def stack_client(stack, monkeypatch):
    """This process talks to the stack's MLflow server (credentials from the environment)."""
    for key, value in stack.client_env.items():
        monkeypatch.setenv(key, value)
    return stack


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts the local cluster stack (PostgreSQL, MLflow server, Ray)"
    )
