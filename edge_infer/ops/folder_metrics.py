"""The folder sources' metrics: what they see of the file systems they watch.

Apart from ``metrics.py`` (the pipeline's) so that each stays short; registered on the same registry,
reached as ``Metrics.folders``. Labels are source names from the config, never a path.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class FolderMetrics:
    """The folder sources' series, on the app's ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.watch_overflows_total = Counter("edge_infer_watch_overflows", "inotify queue overflows (events "
                                             "lost), each followed by a rescan of the folder.", ["source"],
                                             registry=registry)
        self.folder_missing = Gauge("edge_infer_watch_folder_missing", "1 while the source's "
                                    "folder is gone (deleted, renamed away, unmounted): the "
                                    "daemon waits for it to come back.", ["source"],
                                    registry=registry)
        self.polling_fallback = Gauge("edge_infer_watch_polling_fallback", "1 while the source "
                                      "is polled because inotify ran out of watches or instances "
                                      "(fs.inotify.max_user_watches, max_user_instances).",
                                      ["source"], registry=registry)
        self.unlistable = Gauge("edge_infer_watch_unlistable_folders", "Folders in the source "
                                "the daemon may not list (permissions): their files wait; tried "
                                "again at each reconciliation scan.", ["source"], registry=registry)
        self.rescans_total = Counter("edge_infer_watch_rescans", "Reconciliation scans of the "
                                     "source's folder.", ["source"], registry=registry)
        self.missed_total = Counter("edge_infer_watch_missed", "Files a reconciliation scan found "
                                    "that no event had reported (each then offered).", ["source"],
                                    registry=registry)

    def init_source(self, source: str) -> None:
        """A folder source's series at 0, so that dashboards and alerts see them from the start."""
        for metric in (self.watch_overflows_total, self.folder_missing, self.polling_fallback,
                       self.unlistable, self.rescans_total, self.missed_total):
            metric.labels(source)
