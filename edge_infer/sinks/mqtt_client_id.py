"""The default MQTT client id: unique per device, stable across restarts, without giving the machine id away.

A broker keeps one connection per client id and closes the older one when a second arrives, so two devices
sharing an id knock each other off in turn. Host names are not unique (every Raspberry Pi left as it came is
``raspberrypi``), so the id carries 8 hex digits derived from the machine id (``/etc/machine-id``, else
D-Bus's copy): ``edge-infer-<device>-<8 hex>``. The machine id itself is meant to stay private (machine-id(5)),
hence a keyed digest of it, as systemd's ``sd_id128_get_machine_app_specific`` does. Without either file
(a container, a minimal image), a random id is made once and kept in the spool folder.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
KEPT_FILE = "client-id"  # in the spool folder, when no machine id exists
_KEY = b"edge-infer mqtt client id"


def _machine_id(files: tuple[Path, ...]) -> str | None:
    for path in files:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text and text != "uninitialized":  # systemd's placeholder until the first boot completes
            return text
    return None


def _kept_suffix(folder: Path) -> str:
    path = folder / KEPT_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) == 8 and all(c in "0123456789abcdef" for c in text):
            return text
    except (OSError, UnicodeDecodeError):
        pass  # none yet (or unreadable): make one
    suffix = secrets.token_hex(4)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{KEPT_FILE}.tmp"
        tmp.write_text(suffix + "\n", encoding="ascii")
        os.replace(tmp, path)  # no fsync: lost by a power cut, a new one is made; the broker only sees a new id
    except OSError as e:
        log.warning("cannot keep the MQTT client id in %s (%s); a new one is made at each start", path,
                    e.strerror or e)
    return suffix


def default_client_id(device: str, spool_dir: Path, files: tuple[Path, ...] = MACHINE_ID_FILES) -> str:
    """``edge-infer-<device>-<8 hex>``: from the machine id when there is one, else kept in ``spool_dir``."""
    machine = _machine_id(files)
    if machine is not None:
        suffix = hmac.new(machine.encode("ascii"), _KEY, hashlib.sha256).hexdigest()[:8]
    else:
        suffix = _kept_suffix(spool_dir)
    return f"edge-infer-{device}-{suffix}"
