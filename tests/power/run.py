"""Power cuts, proven: the daemon runs on cutfs (a file system that forgets what was not synced), photos
arrive in bursts, the power is cut at a random moment, the disk comes back, the daemon starts again;
repeated. Then a clean drain, a clean stop, one more cut, and the verdict.

    python tests/power/run.py --photos DIR --cuts N --seed S [--mqtt]

(root: FUSE; from the repository's root, with its venv's python.) The last line is exactly
``cuts N inputs M lost L torn T unsafe_acks U duplicates D``:

- inputs: photos whose arrival in the inbox was durable before a cut (the producer's rename, then an fsync
  of the inbox, as a careful producer does), or that a restored disk showed in the inbox anyway;
- lost: inputs without a result or failure record at the end (or, with --mqtt, whose result the broker
  never delivered to a subscriber that was connected throughout);
- torn: record files found after a cut that are empty, not whole JSON, or for other bytes than their input
  (and inputs filed in done/ or failed/ whose bytes are not the input's);
- unsafe_acks: at a cut, inputs acknowledged (moved to done/ or failed/) whose record did not survive it;
- duplicates: results computed more than once for the same input (a computation lost to a cut is redone;
  allowed, counted). More than one record per input at the end, or an input still in the inbox when the
  drain ends, is reported on its own line and fails the run.

Exit status 0 when lost, torn and unsafe_acks are 0 and nothing else failed. ``--broken NAME`` runs the
daemon with a deliberately wrong write order (tests/power/broken.py), to show the cuts find it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_infer.sinks.durable import fsync_dir
from tests.support.daemon import free_port, http_status, write_config
from tests.power.mount import Mount, unavailable

SOURCE = "drops"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
BROKEN_EVERY = 8  # one input in 8 is a photo cut short, so that the failure path is cut too
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 300.0


@dataclass
class Tally:
    torn: dict[tuple[str, str], str] = field(default_factory=dict)  # (file, sha256) -> where first seen
    unsafe_acks: dict[str, str] = field(default_factory=dict)  # input -> the first cut that showed it
    versions: dict[str, set[bytes]] = field(default_factory=dict)  # input -> distinct result files seen
    notes: list[str] = field(default_factory=list)


class Inputs:
    """Inputs made from the photos on demand, each with bytes of its own (a trailer after the image, which
    decoders ignore): a result's ``input_sha256`` then names exactly one input. One in ``BROKEN_EVERY`` is
    a photo cut short, whose end is a failure record and a move to failed/."""

    def __init__(self, photos: Path) -> None:
        self.photos = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.photos:
            raise SystemExit(f"no .jpg/.jpeg/.png photos in {photos}")
        self.data: dict[str, bytes] = {}
        self.by_sha: dict[str, str] = {}
        self.lock = threading.Lock()

    def new(self) -> str:
        with self.lock:
            i = len(self.data)
            p = self.photos[i % len(self.photos)]
            raw = p.read_bytes()
            if i % BROKEN_EVERY == BROKEN_EVERY - 1:  # a photo cut short: its end is a failure record in failed/
                raw, name = raw[:len(raw) // 3], f"p{i:05d}-truncated-{p.stem}{p.suffix.lower()}"
            else:
                name = f"p{i:05d}-{p.stem}{p.suffix.lower()}"
            self.data[name] = raw + f"\nedge-infer power input {i}\n".encode()
            self.by_sha[hashlib.sha256(self.data[name]).hexdigest()] = name
            return name

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.data[name]).hexdigest()


class Producer:
    """Delivers photos as careful producers do: written under a staging folder on the same disk, fsynced,
    renamed into the inbox, the inbox fsynced. An arrival counts once that last fsync returned; one the
    power cut short is tried again (the same name and bytes) in the next round."""

    def __init__(self, mnt: Path, inputs: Inputs, rng: random.Random, burst: int) -> None:
        self.mnt, self.inputs, self.rng, self.burst = mnt, inputs, rng, burst
        self.retry: list[str] = []  # tried, not known to be delivered
        self.durable: set[str] = set()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, bursts: int, spacing_s: float) -> None:
        self.stop.clear()
        plan = [(self.rng.uniform(0, spacing_s), self.rng.randint(1, self.burst)) for _ in range(bursts)]
        self.thread = threading.Thread(target=self._run, args=(sorted(plan),), daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            self.thread = None

    def _run(self, plan: list[tuple[float, int]]) -> None:
        t0 = time.monotonic()
        for at, n in plan:
            if self.stop.wait(max(0.0, at - (time.monotonic() - t0))):
                return
            names = self.retry[:n]
            names += [self.inputs.new() for _ in range(n - len(names))]
            self.retry = names
            try:
                for name in names:
                    staged = self.mnt / "incoming" / name
                    with open(staged, "wb") as f:
                        f.write(self.inputs.data[name])
                        f.flush()
                        os.fsync(f.fileno())
                    os.rename(staged, self.mnt / "inbox" / name)
                fsync_dir(self.mnt / "inbox")
            except OSError:
                return  # the power is off: these are not (all) delivered; the next round tries again
            self.durable.update(names)
            self.retry = []


def _session_pids(sid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # field 6, the session
                pids.append(int(d))
    return pids


class Daemon:
    def __init__(self, cfg: Path, log: Path, broken: str | None) -> None:
        self.cfg, self.log, self.broken = cfg, log, broken
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = ([sys.executable, str(ROOT / "tests/power/broken.py"), self.broken] if self.broken
               else [sys.executable, "-m", "edge_infer"]) + ["run", "-c", str(self.cfg)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True, cwd=ROOT)

    def kill(self) -> None:
        """SIGKILL to the daemon and every process of its session (decoders, their fork server)."""
        assert self.proc is not None
        for pid in [self.proc.pid, *_session_pids(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        for pid in _session_pids(self.proc.pid):  # none should be left; if one is, it must not write on
            os.kill(pid, signal.SIGKILL)
        self.proc = None
        return rc


def write_power_config(work: Path, mnt: Path, port: int, mqtt_port: int | None) -> Path:
    """The daemon's config (outside the cut disk, as the device's own would be): the whole store on it."""
    output: dict = {"dir": str(mnt / "results")}
    if mqtt_port is not None:
        output["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "device": "power", "reconnect_max_s": 1,
                          "connect_timeout_s": 5}
    source = {"name": SOURCE, "type": "folder", "path": str(mnt / "inbox"), "after": "move",
              "done_dir": str(mnt / "done"), "failed_dir": str(mnt / "failed")}
    return write_config(work, [source], output=output, metrics={"port": port}, shutdown={"drain_timeout_s": 20})


def http_ok(port: int, path: str) -> bool:
    return http_status(port, path) == 200


def read_tree(root: Path, sub: str) -> dict[str, bytes]:
    """Every regular file under ``root/sub`` but the daemon's own hidden folders, by relative path."""
    base = root / sub
    out: dict[str, bytes] = {}
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and p.is_file() and not p.is_symlink():
                out[p.relative_to(base).as_posix()] = p.read_bytes()
    return out


class Verdict:
    """Reads a disk (the backing folder after a cut, or the live one just before) against the inputs."""

    def __init__(self, inputs: Inputs) -> None:
        self.by_sha = inputs.by_sha

    def records(self, disk: Path, tally: Tally, where: str) -> dict[str, list[bytes]]:
        """input name -> its record files' bytes; a torn or foreign record is tallied, not returned."""
        out: dict[str, list[bytes]] = {}
        files = {f"results/{k}": v for k, v in read_tree(disk, f"results/{SOURCE}").items()}
        files.update({f"failed/{k}": v for k, v in read_tree(disk, "failed").items() if k.endswith(".error.json")})
        for rel, raw in files.items():
            try:
                obj = json.loads(raw)
                name = self.by_sha.get(obj.get("input_sha256") or "")
                ok = isinstance(obj, dict) and name is not None and obj.get("input") in (name, None)
            except (ValueError, AttributeError):
                ok, name = False, None
            if not ok or name is None:
                tally.torn.setdefault((rel, hashlib.sha256(raw).hexdigest()),
                                      f"{where}: {rel} ({len(raw)} bytes: {raw[:60]!r})")
                continue
            out.setdefault(name, []).append(raw)
        return out

    def acknowledged(self, disk: Path, tally: Tally, where: str) -> set[str]:
        """Inputs filed in done/ or failed/, told by their bytes; bytes of no input are torn."""
        out = set()
        files = read_tree(disk, "done")
        files.update({f"failed/{k}": v for k, v in read_tree(disk, "failed").items() if not k.endswith(".error.json")})
        for rel, raw in files.items():
            name = self.by_sha.get(hashlib.sha256(raw).hexdigest())
            if name is None:
                tally.torn.setdefault((rel, hashlib.sha256(raw).hexdigest()),
                                      f"{where}: input {rel} ({len(raw)} bytes, not an input's)")
            else:
                out.add(name)
        return out

    def in_inbox(self, disk: Path) -> set[str]:
        return {n for n in (self.by_sha.get(hashlib.sha256(b).hexdigest()) for b in read_tree(disk, "inbox").values())
                if n is not None}


class Collector:
    """A QoS 1 subscriber connected throughout, as a fleet's collector is: what the broker delivered."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.shas: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="power-collector",
                                  clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("edge-infer/power/+/results", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        try:
            sha = json.loads(msg.payload).get("input_sha256")  # type: ignore[attr-defined]
        except ValueError:
            sha = "(not JSON)"
        with self.lock:
            self.shas[sha] = self.shas.get(sha, 0) + 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True, help="a folder of .jpg/.png photos")
    ap.add_argument("--cuts", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--mqtt", action="store_true", help="results also to a real Mosquitto, spool on the cut disk")
    ap.add_argument("--burst", type=int, default=6, help="photos per burst at most")
    ap.add_argument("--broken", help="a deliberately wrong write order (tests/power/broken.py) to show it is caught")
    ap.add_argument("--workdir", type=Path, help="default: a new temporary folder, removed unless it failed")
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edge-infer-power-"))
    work.mkdir(parents=True, exist_ok=True)
    disk, mnt = work / "disk", work / "mnt"
    inputs = Inputs(args.photos)
    verdict, tally = Verdict(inputs), Tally()
    port = free_port()
    broker = collector = None
    if args.mqtt:
        from tests.support.mqtt import Broker

        broker = Broker(work / "broker")
        broker.start()
        collector = Collector(broker.port)
    cfg = write_power_config(work, mnt, port, broker.port if broker else None)
    daemon = Daemon(cfg, work / "daemon.log", args.broken)
    mount = Mount(disk, mnt, log=work / "cutfs.log")
    mount.start()
    for d in ("inbox", "done", "failed", "incoming"):
        (mnt / d).mkdir(exist_ok=True)
    mount.command("sync")  # the device as installed: its folders exist but results/, which the daemon makes
    producer = Producer(mnt, inputs, rng, args.burst)
    expected: set[str] = set()
    t_start = time.monotonic()
    try:
        for cut in range(1, args.cuts + 1):
            daemon.start()
            t0 = time.monotonic()
            producer.start(bursts=rng.randint(1, 3), spacing_s=2.0)
            if rng.random() < 0.25:  # during start-up: recovery from the last cut is itself cut
                time.sleep(rng.uniform(0.0, 2.5))
                phase = "starting"
            else:
                while not http_ok(port, "/readyz") and time.monotonic() - t0 < READY_TIMEOUT_S:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.05, 2.5))
                phase = "serving"
            at = time.monotonic() - t0
            mount.cut()  # the power goes: nothing more reaches the disk ...
            daemon.kill()  # ... and every process dies at once
            producer.join()
            for name, raws in verdict.records(disk, Tally(), "live").items():  # what had been computed
                tally.versions.setdefault(name, set()).update(raws)
            mount.unmount()  # the disk as power returns
            inbox = verdict.in_inbox(disk)
            expected |= producer.durable | inbox
            records = verdict.records(disk, tally, f"cut {cut}")
            acked = verdict.acknowledged(disk, tally, f"cut {cut}")
            expected |= acked
            for name in acked - set(records):
                tally.unsafe_acks.setdefault(name, f"cut {cut}: {name} acknowledged, its record lost")
            print(f"cut {cut:3d} at {at:5.2f} s ({phase}): {len(expected)} inputs so far, {len(records)} records, "
                  f"{len(acked)} acknowledged, {len(inbox)} in the inbox", flush=True)
            mount.start()
        # The last round: the arrivals the last cut cut short are made again, the daemon drains the inbox and
        # stops cleanly; then one more cut, which a clean stop must survive whole.
        daemon.start()
        producer.burst = max(1, len(producer.retry))
        producer.start(bursts=1 if producer.retry else 0, spacing_s=0.0)
        assert producer.thread is not None
        producer.thread.join(DRAIN_TIMEOUT_S)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and not (http_ok(port, "/readyz") and not read_tree(mnt, "inbox")):
            time.sleep(0.2)
        producer.join()
        stuck = sorted(verdict.in_inbox(mnt))  # the drain's own verdict, before the power goes once more
        expected |= producer.durable
        rc = daemon.stop()
        if rc != 0:
            tally.notes.append(f"the daemon's clean stop exited {rc}")
        if collector is not None:  # what the spool still held is sent by now; give the broker a moment
            wait_until = time.monotonic() + 30
            while time.monotonic() < wait_until and any(
                    inputs.sha(n) not in collector.shas for n in expected):
                time.sleep(0.2)
        mount.cut()
        mount.unmount()
        records = verdict.records(disk, tally, "after the drain")
        for name, raws in records.items():
            tally.versions.setdefault(name, set()).update(raws)
        acked = verdict.acknowledged(disk, tally, "after the drain")
        for name in acked - set(records):
            tally.unsafe_acks.setdefault(name, f"after the drain: {name} acknowledged, its record lost")
        expected |= acked
        lost = sorted(n for n in expected if n not in records)
        extra = sorted(n for n, raws in records.items() if len(raws) > 1)
        # An input moved to done/ whose move was not yet durable is back in the inbox: its record is on the disk,
        # so the next start acknowledges it again without computing it (acknowledgements are not synced).
        again = sorted(n for n in verdict.in_inbox(disk) if n in records)
        print(f"after the last cut: {len(again)} input(s) back in the inbox with their records (acknowledged again "
              f"on the next start)")
        missing_mqtt: list[str] = []
        if collector is not None:
            missing_mqtt = sorted(n for n in expected if n in records
                                  and inputs.sha(n) not in collector.shas)
            repeats = sum(c - 1 for c in collector.shas.values())
            print(f"mqtt: {len(collector.shas)} inputs delivered, {repeats} repeats, {len(missing_mqtt)} missing")
        duplicates = sum(max(0, len(v) - 1) for v in tally.versions.values())
        redone_failures = sum(max(0, len(v) - 1) for n, v in tally.versions.items() if "-truncated-" in n)
        print(f"duplicates: {duplicates - redone_failures} results and {redone_failures} failure records computed "
              "again after a cut took back the first")
        mounts = [json.loads(line.split("cutfs: ", 1)[1]) for line in (work / "cutfs.log").read_text().splitlines()
                  if line.startswith("cutfs: {")]
        print(f"syncs seen by cutfs over {len(mounts)} mounts: " + ", ".join(
            f"{sum(m[k] for m in mounts)} {k}" for k in ("fdatasync", "fsync", "fsyncdir")))
        for line in [*list(tally.torn.values())[:10], *list(tally.unsafe_acks.values())[:10], *tally.notes]:
            print("  " + line)
        for what, names in (("lost", lost), ("with more than one record", extra), ("still in the inbox", stuck),
                            ("not delivered over MQTT", missing_mqtt)):
            if names:
                print(f"  {len(names)} input(s) {what}: {', '.join(names[:10])}")
        failed = bool(lost or tally.torn or tally.unsafe_acks or extra or stuck or missing_mqtt or tally.notes)
        print(f"took {time.monotonic() - t_start:.0f} s; work folder {work}" + ("" if failed or args.workdir
                                                                               else " (removed)"))
        print(f"cuts {args.cuts} inputs {len(expected)} lost {len(lost) + len(missing_mqtt)} torn {len(tally.torn)} "
              f"unsafe_acks {len(tally.unsafe_acks)} duplicates {duplicates}")
        ok = not failed
    finally:
        producer.join()
        if daemon.proc is not None:
            daemon.kill()
        if mount.proc is not None:
            mount.unmount()
        if collector is not None:
            collector.close()
        if broker is not None:
            broker.stop()
    if ok and not args.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
