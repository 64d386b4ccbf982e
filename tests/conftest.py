"""How the suite is spread over xdist's workers.

Every test is its own unit of work, except the tests of a module that share a module-scoped fixture (a
sweep, a store, the cluster stack): those go to one worker together, so the fixture is set up once. The
heaviest units are handed out first (longest-processing-time first), so no drill starts in the last
minutes while the other worker idles.

xdist's own ``--dist loadgroup`` cannot do the grouping under pytest 9: it renames ``item._nodeid``, an
attribute pytest 9 no longer reads (nodes keep their id in ``_id``), so marked tests were spread over
both workers and the cluster stack was started twice. The scheduler below groups by module path
instead; ``--dist loadscope`` (one unit per module) is what runs where this file is not loaded.
"""

from __future__ import annotations

import pytest

# Modules whose tests share a module-scoped fixture: each runs on one worker, its tests in a row.
# Checked at collection: a module-scoped fixture in a module not listed here is an error.
SHARED_FIXTURE_MODULES = frozenset(
    {
        "tests/cluster/test_cluster.py",
        "tests/cluster/test_deploy_configs.py",
        "tests/cluster/test_slurm.py",
        "tests/harness/test_read_path_scale.py",
        "tests/harness/test_results_cli.py",
        "tests/harness/test_results_trace.py",
        "tests/mmder/data/test_iemocap_layout.py",
    }
)

# Files whose tests take minutes on 2 cores (CONTRIBUTING.md lists the slowest), heaviest first. The
# rest of the slow tier follows, then the quick tier.
HEAVIEST = (
    "tests/cluster/test_cluster.py",
    "tests/harness/test_provenance_integration.py",
    "tests/harness/test_search.py",
    # after the cluster stack is down: beside its three Ray nodes and PostgreSQL, the requeued Slurm job's
    # second start failed once, with nothing in its log
    "tests/cluster/test_slurm.py",
    "tests/harness/test_results_trace.py",
    "tests/harness/test_pretrain_integration.py",
    "tests/harness/test_read_path_scale.py",
    "tests/harness/test_relocation.py",
    "tests/harness/test_disk_faults.py",
    "tests/harness/test_sweep_integration.py",
    "tests/harness/test_stall.py",
)


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _module_scoped(item: pytest.Item) -> bool:
    """Whether the test uses a fixture set up once per module (or package)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("module", "package") for defs in info.name2fixturedefs.values() for d in defs)


def _rank(item: pytest.Item) -> tuple[int, int]:
    path = _module(item.nodeid)
    if path in HEAVIEST:
        return (0, HEAVIEST.index(path))
    return (1, 0) if item.get_closest_marker("slow") else (2, 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unlisted = sorted({_module(i.nodeid) for i in items if _module_scoped(i)} - SHARED_FIXTURE_MODULES)
    if unlisted:
        raise pytest.UsageError(
            f"{', '.join(unlisted)}: a module-scoped fixture; add the module to SHARED_FIXTURE_MODULES in "
            "tests/conftest.py so its tests run on one worker"
        )
    items.sort(key=_rank)  # stable: a file's tests keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        """A unit of work per test; per module for the modules that share a fixture."""

        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return ModuleGroupScheduling(config, log)
