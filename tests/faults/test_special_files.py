"""A Unix socket in the inbox (a program's socket bound there by mistake, one copied by rsync -D) is
not an image: like a FIFO or a device it ends in the failed folder as ``unsupported``, never
``io``."""
from __future__ import annotations

import json
import os
import socket
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.metrics import metric


@contextmanager
def bound_socket(folder: Path, name: str) -> Iterator[socket.socket]:
    """An AF_UNIX socket bound (and listening) at ``folder/name``; bound from inside the folder,
    as a socket's path is limited to 107 bytes and ``tmp_path`` can be longer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    try:
        os.chdir(folder)
        sock.bind(name)
        os.chdir(here)
        sock.listen(1)
        yield sock
    finally:
        os.chdir(here)
        sock.close()


def test_a_unix_socket_in_the_inbox_fails_as_unsupported(tmp_path):
    port = free_port()
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    inbox.mkdir()
    cfg = write_config(tmp_path, metrics={"port": port})
    failed_metric = 'edge_infer_images_total{outcome="failed",source="drops"}'
    with bound_socket(inbox, "at_start.jpg"), daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        with bound_socket(inbox, "live.jpg"):  # seen arriving
            wait_for(lambda: metric(port, failed_metric) == 2 and not files_under(inbox), 60,
                     "both sockets failed and filed")
        proc.terminate()
        assert proc.wait(30) == 0
    for name in ("at_start.jpg", "live.jpg"):
        record = json.loads((failed / f"{name}.error.json").read_text())
        assert record["error"]["kind"] == "unsupported", record
        assert "socket" in record["error"]["message"], record
        assert stat.S_ISSOCK(os.lstat(failed / name).st_mode), "the socket itself is in failed/"
