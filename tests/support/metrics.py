"""Reading a running daemon's Prometheus metrics."""
from __future__ import annotations

import re
import urllib.request


def metric(port: int, sample: str) -> float:
    """One sample, as written in the text format (labels sorted), from a daemon's /metrics; 0 if absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        m = re.search(rf"^{re.escape(sample)} (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0
