"""``edge-infer status``: the running daemon at a glance, read from its own HTTP endpoints.

Everything comes from ``/metrics``, ``/healthz`` and ``/readyz``, the same view Prometheus has, so the
person at the device and the dashboard never disagree. Rates need two scrapes; ``interval`` apart.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone

from prometheus_client.parser import text_string_to_metric_families

from ..errors import EdgeInferError
from .metrics import OUTCOMES

HTTP_TIMEOUT_S = 5.0
DEFAULT_URL = "http://127.0.0.1:9464"

Labels = tuple[tuple[str, str], ...]


class DaemonUnreachable(EdgeInferError):
    """Nothing (or not edge-infer) answers at ``url``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot read the daemon's metrics at {url}: {reason} (is it running? "
                         "`systemctl status edge-infer`; or pass --url / -c CONFIG)")
        self.url = url


@dataclass(frozen=True)
class Scrape:
    """One reading of the endpoints: HTTP statuses of the probes (0: no answer) and every sample."""

    healthz: int
    readyz: int
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() of the /metrics read

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())))

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(k), v) for k, v in sorted(self.samples.get(name, {}).items())]

    def label_values(self, name: str, label: str) -> list[str]:
        return sorted({labels[label] for labels, _ in self.series(name) if label in labels})


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text format -> {sample name: {sorted labels: value}}."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def url_for(host: str, port: int) -> str:
    """The URL to reach a daemon listening on ``host``: a wildcard address is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def scrape(base_url: str) -> Scrape:
    """Read the three endpoints; raises DaemonUnreachable when /metrics cannot be read or is not ours."""
    base = base_url.rstrip("/")
    try:
        status, text = _get(base + "/metrics")
        at = time.monotonic()
        if status != 200:
            raise DaemonUnreachable(base, f"/metrics answered HTTP {status}")
        samples = parse_metrics(text)
        healthz, readyz = _get(base + "/healthz")[0], _get(base + "/readyz")[0]
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors; ValueError: bad URL or text
        raise DaemonUnreachable(base, str(getattr(e, "reason", e))) from e
    if "edge_infer_ready" not in samples:
        raise DaemonUnreachable(base, "it answers, but its /metrics has no edge_infer_* metrics")
    return Scrape(healthz, readyz, samples, at)


def _duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def _mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _table(rows: list[list[str]], numeric: range) -> list[str]:
    """Aligned columns: numbers to the right, text to the left."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            .rstrip() for r in rows]


def _rate(now: Scrape, before: Scrape | None, name: str, **labels: str) -> float | None:
    if before is None or now.at <= before.at:
        return None
    a, b = before.value(name, **labels), now.value(name, **labels)
    if a is None or b is None or b < a:  # b < a: the daemon restarted between the scrapes
        return None
    return (b - a) / (now.at - before.at)


def render(now: Scrape, before: Scrape | None, url: str, wall_time: float | None = None) -> str:
    """The status view as text; ``before`` (an earlier scrape) gives rates, None leaves them out."""
    wall = time.time() if wall_time is None else wall_time
    lines = [f"edge-infer at {url}",
             f"  health      {_probe(now.healthz, 'alive', 'UNHEALTHY')}, "
             f"{_probe(now.readyz, 'ready', 'NOT READY (starting or draining)')}"]
    started = now.value("process_start_time_seconds")
    if started:
        since = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"  uptime      {_duration(wall - started)} (since {since})")
    models = now.series("edge_infer_model_info")
    model = ", ".join(f"{m['name']} {m['precision']} sha256 {m['sha256'][:12]}"
                      + (f" version {m['version']}" if m.get("version") else "")
                      for m, _ in models) or "not loaded"
    lines.append(f"  model       {model}")
    lines.append(f"  queue       {now.value('edge_infer_queue_depth') or 0:.0f} waiting, "
                 f"{now.value('edge_infer_inputs_in_flight') or 0:.0f} in flight")
    lines.append("  " + _resources(now, before))
    lines.append("  " + _last_error(now, wall))
    lines += _parked(now)
    lines += _watching(now)
    lines += ["", *_sources(now, before, wall)]
    cameras = now.label_values("edge_infer_camera_up", "source")
    if cameras:
        lines += ["", *_cameras(now, cameras)]
    return "\n".join(lines) + "\n"


def _probe(code: int, good: str, bad: str) -> str:
    if code == 200:
        return good
    return f"{bad}: {'no answer' if code == 0 else f'HTTP {code}'}"


def _resources(now: Scrape, before: Scrape | None) -> str:
    rss, limit = now.value("process_resident_memory_bytes"), now.value("edge_infer_memory_limit_bytes")
    text = "memory      " + (_mb(rss) + " resident" if rss is not None else "unknown")
    if rss is not None and limit:
        text += f" of {_mb(limit)} ({100 * rss / limit:.0f}%)"
    cpu = _rate(now, before, "process_cpu_seconds_total")
    return text + (f", CPU {100 * cpu:.0f}% of a core" if cpu is not None else "")


def _last_error(now: Scrape, wall: float) -> str:
    stamps = [(v, labels) for labels, v in now.series("edge_infer_last_error_timestamp_seconds") if v > 0]
    if not stamps:
        return "last error  none since start"
    stamp, labels = max(stamps, key=lambda p: p[0])
    return (f"last error  {labels.get('source', '?')}: {labels.get('kind', '?')}, {_duration(wall - stamp)} ago "
            "(details: the source's failed_dir, *.error.json; journalctl -u edge-infer)")


def _parked(now: Scrape) -> list[str]:
    parked = [(labels.get("source", "?"), v) for labels, v in now.series("edge_infer_inputs_parked") if v > 0]
    if not parked:
        return []
    return ["  parked      " + ", ".join(f"{src}: {v:.0f}" for src, v in parked) + " (recorded, cannot be moved out "
            "of the inbox; why: <output.dir>/.parked.json, journalctl -u edge-infer)"]


def _watching(now: Scrape) -> list[str]:
    """Folder sources that do not see all of their folder; what the reconciliation scans found."""
    notes = []
    for src in now.label_values("edge_infer_watch_rescans_total", "source"):
        says = []
        if now.value("edge_infer_watch_folder_missing", source=src) == 1:
            says.append("FOLDER MISSING (waiting for it to come back)")
        if now.value("edge_infer_watch_polling_fallback", source=src) == 1:
            says.append("polling (inotify ran out of watches: raise fs.inotify.max_user_watches, "
                        "see README)")
        if unlistable := now.value("edge_infer_watch_unlistable_folders", source=src):
            says.append(f"{unlistable:.0f} folder(s) it cannot list (named in the log)")
        if missed := now.value("edge_infer_watch_missed_total", source=src):
            says.append(f"{missed:.0f} file(s) found by rescans that no event reported")
        if says:
            notes.append(f"{src}: " + ", ".join(says))
    return ["  watching    " + "; ".join(notes)] if notes else []


def _sources(now: Scrape, before: Scrape | None, wall: float) -> list[str]:
    rows = [["source", *OUTCOMES, "rate/s", "last ok"]]
    for src in now.label_values("edge_infer_images_total", "source"):
        counts = [now.value("edge_infer_images_total", source=src, outcome=o) or 0 for o in OUTCOMES]
        rates = [_rate(now, before, "edge_infer_images_total", source=src, outcome=o) for o in OUTCOMES]
        rate = "-" if None in rates else f"{sum(r for r in rates if r is not None):.2f}"
        last = now.value("edge_infer_last_success_timestamp_seconds", source=src)
        rows.append([src, *(f"{c:.0f}" for c in counts), rate, f"{_duration(wall - last)} ago" if last else "never"])
    if len(rows) == 1:
        return ["  no sources reported yet"]
    return _table(rows, numeric=range(1, 5))


def _cameras(now: Scrape, cameras: list[str]) -> list[str]:
    rows = [["camera", "state", "reconnects", "stalls", "dropped"]]
    for cam in cameras:
        state = "up" if now.value("edge_infer_camera_up", source=cam) == 1 else "DOWN"
        if now.value("edge_infer_camera_frozen", source=cam) == 1:
            state += ", FROZEN"
        drops = [(labels["reason"], v) for labels, v in now.series("edge_infer_frames_dropped_total")
                 if labels.get("source") == cam and v > 0]
        dropped = ", ".join(f"{r} {v:.0f}" for r, v in drops) or "0"
        rows.append([cam, state, f"{now.value('edge_infer_camera_reconnects_total', source=cam) or 0:.0f}",
                     f"{now.value('edge_infer_camera_stalls_total', source=cam) or 0:.0f}", dropped])
    return _table(rows, numeric=range(2, 4))


def status(url: str, interval: float) -> tuple[str, bool]:
    """Scrape (twice, ``interval`` seconds apart, when ``interval`` > 0) and render.

    Returns the text and whether the daemon is alive and ready.
    """
    before = None
    if interval > 0:
        before = scrape(url)
        time.sleep(interval)
    now = scrape(url)
    return render(now, before, url.rstrip("/")), now.healthz == 200 and now.readyz == 200
