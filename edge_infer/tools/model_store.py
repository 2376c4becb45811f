"""The model store: every model a device has been given, kept as a version, and which one serves.

``<store>/<version>/`` holds ``model.onnx``, ``model.json`` (the manifest, with ``"version"``
added), the self-test photos it names and ``version.json`` (where it came from, when, what it
knows: classes, counts, accuracy per class and the confusion matrix when training wrote them).
``<store>/current`` and ``<store>/previous`` are relative symlinks to version folders, each
replaced by one ``rename``: a power cut or a reader at any moment sees the old target or the new,
never none. A daemon whose ``model.path`` is ``<store>/current/model.onnx`` watches that path
(every configured model path is watched), so the swap of ``current`` is its cue to load, self-test
and swap in the new version, the same hot swap as a SIGHUP.

A version is checked before it is kept (it loads, its sha256 matches its manifest, its self-test
passes) and again before it is deployed (its preprocessing matches the serving version's): a
version that fails is refused and ``current`` is left as it was.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..classifier.manifest import MANIFEST_NAME, MODEL_NAME, load_manifest, write_manifest
from ..classifier.selftest import SELFTEST_KEY, self_test
from ..classifier.session import ModelSession
from ..errors import ModelError
from ..sinks.durable import encode_json, fsync_dir, make_dirs, read_json, rename_noreplace

VERSION_FILE = "version.json"
CURRENT, PREVIOUS = "current", "previous"
VERSION_KEY = "version"  # in the stored copy of model.json: the daemon reports it as it loads
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _seal(folder: Path) -> None:
    """Every file under ``folder`` readable by all and on disk before the folder is renamed into
    the store. Readable by all: root's ``models add`` under a umask of 077 would otherwise keep a
    version the daemon's user cannot even stat, and the daemon's watch would never see the
    deploy."""
    for dirpath, _, files in os.walk(folder):
        os.chmod(dirpath, 0o755)
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fchmod(fd, 0o644)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _now() -> str:
    # Milliseconds: versions are listed in the order they were added, and one add takes longer.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ModelStore:
    """The versions under ``root``; ``add``, ``deploy`` and ``rollback`` raise ``ModelError`` to
    refuse, leaving the store as it was."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the store for one change (an add, a deploy and its confirmation): two at once would
        each put back the links the other found. Refused at once, not waited for, when another
        holds it."""
        make_dirs(self.root)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise ModelError(f"another edge-infer models command is changing {self.root}; "
                                 "try again once it is done") from e
            yield
        finally:
            os.close(fd)

    def pointer(self, which: str) -> str | None:
        """The version ``current`` or ``previous`` names; None when it names none."""
        try:
            return os.path.basename(os.readlink(self.root / which))
        except OSError:
            return None

    def versions(self) -> list[dict[str, Any]]:
        """Each version's record, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
                continue
            record = read_json(entry / VERSION_FILE)
            if record is not None:
                found.append({**record, VERSION_KEY: entry.name})
        return sorted(found, key=lambda r: (str(r.get("created_at", "")), r[VERSION_KEY]))

    def model_path(self, version: str) -> Path:
        return self.root / version / MODEL_NAME

    def _next_name(self) -> str:
        taken = {r[VERSION_KEY] for r in self.versions()}
        numbers = [int(n[1:]) for n in taken if re.fullmatch(r"v[0-9]+", n)]
        return f"v{max(numbers, default=0) + 1}"

    def add(self, src: Path, name: str | None = None) -> dict[str, Any]:
        """Keep the model folder ``src`` (``edge-infer train``'s output, or any folder with
        ``model.onnx`` and ``model.json``) as a new version; returns its record."""
        src = src.parent if src.name == MODEL_NAME else src
        if not (src / MODEL_NAME).is_file():
            raise ModelError(f"{src} has no {MODEL_NAME} (give a folder edge-infer train wrote)")
        name = name or self._next_name()
        if not NAME.fullmatch(name) or name in (CURRENT, PREVIOUS):
            raise ModelError(f"version name {name!r}: letters, digits, '.', '_' and '-', at most "
                             f"64, not {CURRENT!r} or {PREVIOUS!r}")
        if os.path.lexists(self.root / name):
            raise ModelError(f"version {name!r} exists already in {self.root}")
        make_dirs(self.root)
        staging = self.root / f".adding-{name}"
        shutil.rmtree(staging, ignore_errors=True)  # what a crash during an earlier add left
        try:
            record = self._stage(src, staging, name)
            _seal(staging)
            rename_noreplace(staging, self.root / name)
        except FileExistsError as e:
            raise ModelError(f"version {name!r} exists already in {self.root}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fsync_dir(self.root)
        return {**record, VERSION_KEY: name}

    def _stage(self, src: Path, staging: Path, name: str) -> dict[str, Any]:
        manifest = load_manifest(src / MODEL_NAME)
        staging.mkdir()
        shutil.copyfile(src / MODEL_NAME, staging / MODEL_NAME)
        shutil.copyfile(src / MANIFEST_NAME, staging / MANIFEST_NAME)
        samples = manifest.raw.get(SELFTEST_KEY)
        if isinstance(samples, str) and (src / samples).is_dir():
            shutil.copytree(src / samples, staging / samples)
        try:
            session = ModelSession.load(staging / MODEL_NAME)
            summary = self_test(session, session)
        except ModelError as e:
            raise ModelError(f"{src} refused: {e}") from e
        summary = summary.replace(str(staging.resolve()), str((self.root / name).resolve()))
        write_manifest(staging / MODEL_NAME, {**manifest.raw, VERSION_KEY: name})
        # What training measured (classes, counts, accuracy per class fp32 and int8, confusion
        # matrices, the data's digest, its time), kept whole: its keys are training's to add to.
        training = manifest.raw.get("training")
        record = {"created_at": _now(), "source": str(src.resolve()),
                  "model": {"name": manifest.name, "sha256": session.sha256,
                            "precision": session.precision},
                  "labels": list(manifest.labels), "selftest": summary,
                  "training": training if isinstance(training, dict) else {}}
        (staging / VERSION_FILE).write_bytes(encode_json(record))
        return record

    def deploy(self, name: str) -> tuple[str | None, str]:
        """Make ``name`` the serving version after it passes its self-test against the serving
        version's preprocessing; returns (the version it replaces, the self-test's summary)."""
        if not NAME.fullmatch(name) or not (self.root / name / VERSION_FILE).is_file():
            raise ModelError(f"no version {name!r} in {self.root} (see edge-infer models list)")
        old = self.pointer(CURRENT)
        try:
            candidate = ModelSession.load(self.model_path(name))
            serving = (ModelSession.load(self.model_path(old))
                       if old is not None and self.model_path(old).is_file() else candidate)
            summary = self_test(candidate, serving)
        except ModelError as e:
            raise ModelError(f"version {name!r} refused, {old or 'the serving model'} serves on: "
                             f"{e}") from e
        if old != name:
            if old is not None:
                self._point(PREVIOUS, old)
            self._point(CURRENT, name)
        return old, summary

    def rollback(self) -> tuple[str | None, str]:
        """Deploy the previous version again (the one it replaces becomes the previous)."""
        previous = self.pointer(PREVIOUS)
        if previous is None:
            raise ModelError(f"no previous version in {self.root} to roll back to")
        return self.deploy(previous)

    def restore(self, current: str | None, previous: str | None) -> None:
        """Put both pointers back as they were (a deploy the daemon refused)."""
        for which, name in ((PREVIOUS, previous), (CURRENT, current)):
            if name is None:
                (self.root / which).unlink(missing_ok=True)
            else:
                self._point(which, name)
        fsync_dir(self.root)

    def _point(self, which: str, name: str) -> None:
        tmp = self.root / f".{which}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(name, tmp)  # relative: the store can be moved or mounted elsewhere
        os.replace(tmp, self.root / which)
        fsync_dir(self.root)
