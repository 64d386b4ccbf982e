"""Which actors a Train run of ours starts: none for Ray Data when the run has no Ray Dataset.

Train V2 starts a ``DatasetManager`` actor for every run, datasets or not: one more Python process per
cell that imports Ray Data and holds memory, for a cell that reads its own cache. Its callback is
dropped when there is nothing for it to shard (workers then have no dataset shards, which a cell never
asks for). Ray-free at import, so the bench's torch-free trainer can share it with ``CellTrainer``.
"""

from __future__ import annotations


class NoDatasetActor:
    """Mixin before a Train trainer class (``class T(NoDatasetActor, TorchTrainer)``)."""

    datasets: dict | None

    def _create_default_callbacks(self) -> list:
        callbacks = super()._create_default_callbacks()  # type: ignore[misc]
        if self.datasets:
            return callbacks
        return [cb for cb in callbacks if type(cb).__name__ != "DatasetsCallback"]
