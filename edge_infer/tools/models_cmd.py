"""``edge-infer models``: the store's commands as text for the terminal, and a deploy confirmed by
the running daemon.

A deploy or rollback only swaps the store's ``current`` link (after the version's own self-test);
the daemon, whose ``model.path`` is ``<store>/current/model.onnx``, sees the swap and hot-swaps the
model with its own self-test. No signal is sent, so no pid is looked up and no privilege is needed
beyond writing the store: the daemon watches every configured model path already. With ``-c
CONFIG`` the command then reads the daemon's /metrics until it names the version, and undoes the
swap when the daemon refuses it (its failed-reload count rises) or does not take it within
``--wait`` seconds: the old model serves on either way.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

from ..classifier.manifest import MODEL_NAME
from ..config import AppConfig, load_config
from ..errors import ConfigError, ModelError
from ..ops.status import DaemonUnreachable, Scrape, scrape, url_for
from .model_store import CURRENT, PREVIOUS, VERSION_KEY, ModelStore

POLL_S = 0.25
FAILED = {"outcome": "failed"}


def store_dir(config: AppConfig) -> Path:
    """``model.store``, else ``models/`` beside ``output.dir`` (the daemon's state)."""
    return config.model.store or config.output.dir.parent / "models"


def run(args: argparse.Namespace) -> str:
    """The text the command prints; raises ``ModelError`` (refused) or ``ConfigError``."""
    config = load_config(args.config) if args.config is not None else None
    if args.store is not None:
        store = ModelStore(args.store)
    elif config is not None:
        store = ModelStore(store_dir(config))
    else:
        raise ConfigError("--store", "give the store's folder, or -c CONFIG to read model.store")
    if args.models_command == "list":
        return _list(store, args.json)
    if args.models_command != "add" and args.wait < 0:
        raise ConfigError("--wait", "must be >= 0")
    with store.changing():
        if args.models_command == "add":
            record = store.add(args.dir, args.name)
            return f"added {record[VERSION_KEY]} ({record['selftest']}); deploy it with " \
                   f"edge-infer models deploy {record[VERSION_KEY]}\n"
        if args.models_command == "deploy":
            return _swap(store, config, args.wait, lambda: store.deploy(args.version))
        return _swap(store, config, args.wait, store.rollback)


def _list(store: ModelStore, as_json: bool) -> str:
    current, previous = store.pointer(CURRENT), store.pointer(PREVIOUS)
    records = [{**r, "serving": r[VERSION_KEY] == current, "previous": r[VERSION_KEY] == previous}
               for r in store.versions()]
    if as_json:
        return json.dumps(records, ensure_ascii=False) + "\n"
    if not records:
        return f"no versions in {store.root} (add one: edge-infer models add DIR)\n"
    rows = [["", "version", "created", "model", "classes", "int8 top-1", "sha256"]]
    for r in records:
        accuracy = r.get("training", {}).get("accuracy", {}).get("int8")
        rows.append(["*" if r["serving"] else "-" if r["previous"] else "", r[VERSION_KEY],
                     str(r.get("created_at", ""))[:19].replace("T", " "),
                     str(r.get("model", {}).get("name", "")),
                     str(len(r.get("labels", []))),
                     "" if accuracy is None else f"{100 * accuracy:.1f}%",
                     str(r.get("model", {}).get("sha256", ""))[:12]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([*lines, f"(* serving, - previous; store {store.root})"]) + "\n"


def _swap(store: ModelStore, config: AppConfig | None, wait: float,
          swap: Callable[[], tuple[str | None, str]]) -> str:
    before = (store.pointer(CURRENT), store.pointer(PREVIOUS))
    url = _daemon_url(store, config) if wait > 0 else None
    baseline = _read(url) if url else None
    old, summary = swap()
    now = store.pointer(CURRENT)
    text = f"{now} serves in {store.root} (was {old or 'none'}); {summary}\n"
    if config is not None and url is None and wait > 0:
        return text + (f"note: {config.path}'s model.path is not "
                       f"{store.root / CURRENT / MODEL_NAME}: its daemon does not serve from this "
                       "store\n")
    if url is None or now == old:
        return text
    if baseline is None:
        return text + f"no daemon answers at {url}: it serves {now} once it starts\n"
    return text + _confirm(store, url, baseline, now or "", wait, before)


def _daemon_url(store: ModelStore, config: AppConfig | None) -> str | None:
    """The daemon's metrics URL when ``config`` serves from this store."""
    if config is None or config.model.path is None:
        return None
    current = store.root / CURRENT
    if os.path.abspath(config.model.path) not in (os.path.abspath(current / MODEL_NAME),
                                                 os.path.abspath(current)):
        return None
    return url_for(config.metrics.host, config.metrics.port)


def _read(url: str) -> Scrape | None:
    try:
        return scrape(url)
    except DaemonUnreachable:
        return None


def _serves(s: Scrape | None, version: str) -> bool:
    return s is not None and any(labels.get(VERSION_KEY) == version and value == 1
                                 for labels, value in s.series("edge_infer_model_info"))


def _confirm(store: ModelStore, url: str, baseline: Scrape, version: str, wait: float,
             before: tuple[str | None, str | None]) -> str:
    failed = baseline.value("edge_infer_model_reloads_total", **FAILED) or 0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        s = _read(url)
        if _serves(s, version):
            return f"the daemon at {url} serves {version}\n"
        if s is not None and (s.value("edge_infer_model_reloads_total", **FAILED) or 0) > failed:
            store.restore(*before)
            raise ModelError(f"the daemon at {url} refused {version} (its log says why); undone, "
                             f"{before[0] or 'its model'} serves on")
        time.sleep(POLL_S)
    store.restore(*before)
    raise ModelError(f"the daemon at {url} did not serve {version} within {wait:g} s; undone, "
                     f"{before[0] or 'its model'} serves on")

