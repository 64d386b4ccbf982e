"""How the suite is spread over xdist's workers (``--dist loadgroup``, see pyproject.toml).

A module whose tests share a module-scoped fixture (a sweep, a store, the cluster stack) runs on one
worker, its tests one after another, so the fixture is set up once; every other test is its own unit of
work. The heaviest units are handed out first (longest-processing-time first): a drill started in the
last minutes would otherwise leave one worker idle while the other finishes it.
"""

from __future__ import annotations

import pytest

# Files whose tests take minutes on 2 cores (measured: CONTRIBUTING.md lists the slowest); ordered
# heaviest first. The rest of the slow tier follows, then the quick tier.
HEAVIEST = (
    "tests/cluster/test_cluster.py",
    "tests/harness/test_provenance_integration.py",
    "tests/cluster/test_slurm.py",
    "tests/harness/test_search.py",
    "tests/harness/test_results_trace.py",
    "tests/harness/test_read_path_scale.py",
    "tests/harness/test_pretrain_integration.py",
    "tests/harness/test_relocation.py",
    "tests/harness/test_disk_faults.py",
    "tests/harness/test_stall.py",
)


def _module_scoped(item: pytest.Item) -> bool:
    """Whether the test uses a fixture set up once per module (or package)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("module", "package") for defs in info.name2fixturedefs.values() for d in defs)


def _rank(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0]
    if path in HEAVIEST:
        return (0, HEAVIEST.index(path))
    return (1, 0) if item.get_closest_marker("slow") else (2, 0)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _module_scoped(item) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=_rank)  # stable: a file's tests keep their order
