"""The folder sources' metrics: what they see of the file systems they watch.

Apart from ``metrics.py`` (the pipeline's) so that each stays short; registered on the same registry,
reached as ``Metrics.folders``. Labels are source names from the config, never a path.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class FolderMetrics:
    """The folder sources' series, on the app's ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.watch_overflows_total = Counter("edge_infer_watch_overflows", "inotify queue overflows (events "
                                             "lost), each followed by a rescan of the folder.", ["source"],
                                             registry=registry)
