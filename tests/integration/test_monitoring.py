"""The shipped monitoring (monitoring/): promtool accepts the rules, and a real Prometheus scraping a real
daemon answers every dashboard query with data and evaluates every alert, the right ones true."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.support.ci import skip_unless_ci
from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.images import write_images
from tests.support.paths import ROOT

DASHBOARD = ROOT / "monitoring" / "grafana" / "edge-infer.json"
RULES = ROOT / "monitoring" / "prometheus" / "edge-infer-rules.yml"
# Grafana's built-in interval variables, and what the queries run with here (scrapes every second).
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


@pytest.fixture(scope="module")
def prometheus_bin() -> tuple[str, str]:
    prom, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not promtool:
        skip_unless_ci("needs Debian's prometheus package (prometheus, promtool): sudo .ci/install-system-deps")
    return prom, promtool


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, keyed by panel title and refId (variables included)."""
    dash = json.loads(DASHBOARD.read_text())
    out = {f"{p['title']}/{t['refId']}": t["expr"] for p in dash["panels"] for t in p.get("targets", [])}
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            # label_values(SELECTOR, label) is Grafana's: the selector must select series, with the label.
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            out[f"${var['name']}"] = f"count by ({m.group(2)}) ({m.group(1)})"
    return out


def substitute(expr: str) -> str:
    """What Grafana sends: its interval variables filled in, each template variable as "All" (.*)."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    expr = re.sub(r"\$\{?(job|instance)\}?", ".*", expr)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_promtool_accepts_the_rules(prometheus_bin):
    done = subprocess.run([prometheus_bin[1], "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_one_class_alert_fires_for_a_class_taking_over_and_not_for_a_mix_or_a_trickle(prometheus_bin, tmp_path):
    """promtool's rule unit test on made-up series: a source where one class is 10 of 11 results fires; one
    with three classes in turn, and one with too few results, do not."""
    def series(source: str, label: str, per_min: int) -> dict[str, str]:
        return {"series": f'edge_infer_predictions_total{{job="edge-infer",instance="pi",source="{source}",'
                          f'label="{label}"}}', "values": f"0+{per_min}x120"}
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series("jammed", "invoice", 10), series("jammed", "letter", 1),
                         *(series("mixed", c, 3) for c in ("invoice", "letter", "receipt")),
                         series("quiet", "invoice", 0)],
        "alert_rule_test": [{"eval_time": "90m", "alertname": "EdgeInferOneClassDominates", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "job": "edge-infer", "instance": "pi", "source": "jammed",
                           "label": "invoice"},
            "exp_annotations": _one_class_annotations()}]}]}]}
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(tests))
    done = subprocess.run([prometheus_bin[1], "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _one_class_annotations() -> dict[str, str]:
    """The alert's annotations as Prometheus renders them for the "jammed" source of the test above."""
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r["alert"] == "EdgeInferOneClassDominates")
    return {"summary": "jammed on pi: invoice is 90.91% of the last hour's results",
            "description": rule["annotations"]["description"].replace("{{ $labels.label }}", "invoice")}


def test_the_dashboard_is_built_for_a_fleet():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


# -- a real Prometheus -------------------------------------------------------------------------------------
def query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # a bad query answers 400 with the error in the body
        return json.loads(e.read())


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())["data"]


def values(result: dict[str, Any]) -> list[float]:
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data["result"]]


@contextmanager
def prometheus(binary: str, tmp: Path, target_port: int, jobs: list[dict[str, Any]] | None = None) -> Iterator[int]:
    """Our own Prometheus on a free loopback port and its own data folder, scraping the daemon each second;
    ``jobs``: scrape configs in place of the one plain ``edge-infer`` job (each gets the daemon as target)."""
    port = free_port()
    jobs = jobs or [{"job_name": "edge-infer"}]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{**j, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]} for j in jobs]}
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: http_status(port, "/-/ready") == 200 or proc.poll() is not None, 30, "prometheus ready")
        assert proc.poll() is None, (tmp / "prometheus.log").read_text()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_real_prometheus_gets_data_for_every_dashboard_query_and_evaluates_every_alert(
        tmp_path, prometheus_bin, pyav):
    daemon_port = free_port()
    sources = [{"name": "drops", "type": "folder", "path": "inbox", "after": "move", "done_dir": "done",
                "failed_dir": "failed"},
               {"name": "nodev", "type": "camera", "url": "/dev/video63", "fps": 2, "reconnect_min_s": 0.2,
                "reconnect_max_s": 1}]  # a camera that is down: its alert must be true
    # The stock model's 1000 classes counted by label, so that the Classes panels have data too.
    cfg = write_config(tmp_path, sources, metrics={"port": daemon_port, "max_label_classes": 1000})
    (tmp_path / "prom").mkdir()
    with daemon(cfg), prometheus(prometheus_bin[0], tmp_path / "prom", daemon_port) as port:
        wait_for(lambda: values(query(port, 'edge_infer_ready{job="edge-infer"}')) == [1.0], 60, "daemon scraped")
        # Inputs after the first scrapes, so that rates and histograms see them arrive.
        write_images(tmp_path / "staging", 6)
        (tmp_path / "staging" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        for p in sorted((tmp_path / "staging").iterdir()):
            p.rename(tmp_path / "inbox" / p.name)
        done = 'sum(edge_infer_images_total{outcome="ok"}) == 6 and on() sum(edge_infer_images_total{outcome="failed"}) == 1'
        wait_for(lambda: values(query(port, done + ' and on() sum(edge_infer_inputs_in_flight) == 0')), 60,
                 "all inputs counted and acknowledged in Prometheus")

        for name, expr in dashboard_queries().items():
            result = query(port, substitute(expr))
            assert result["status"] == "success", (name, expr, result.get("error"))
            got = values(result)
            assert got, f"{name}: no data for {substitute(expr)}"
            assert any(math.isfinite(v) for v in got), f"{name}: only NaN/Inf for {substitute(expr)}: {got}"

        true_now = set()
        for name, expr in alert_rules().items():
            result = query(port, expr)
            assert result["status"] == "success", (name, expr, result.get("error"))
            if values(result):
                true_now.add(name)
        # One camera is down and 1 of 7 inputs failed; everything else is healthy (6 results are too few
        # for EdgeInferOneClassDominates, whatever their classes).
        assert true_now == {"EdgeInferCameraDown", "EdgeInferFailuresRising"}

        # The rule engine itself evaluates every rule without error, and holds the same two as pending.
        def engine_agrees() -> bool:
            rules = [r for g in api(port, "/api/v1/rules")["groups"] for r in g["rules"]]
            assert len(rules) == len(alert_rules())
            assert all(r["health"] in ("ok", "unknown") and not r.get("lastError") for r in rules), rules
            alerts = {a["labels"]["alertname"] for a in api(port, "/api/v1/alerts")["alerts"]}
            return all(r["health"] == "ok" for r in rules) and alerts == true_now

        wait_for(engine_agrees, 30, f"the rule engine to evaluate every rule and hold {true_now} pending")
        cams = [a["labels"].get("source") for a in api(port, "/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "EdgeInferCameraDown"]
        assert cams == ["nodev"]


def test_a_real_prometheus_scrapes_over_https_with_basic_auth_and_a_wrong_password_is_down(
        tmp_path, prometheus_bin):
    from tests.support.tls import bcrypt_hash, make_pki

    pki = make_pki(tmp_path / "pki")
    if pki is None:
        skip_unless_ci("needs the openssl CLI to make a test CA")
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)},
                                   "basic_auth_users": {"prometheus": bcrypt_hash("s3cret", cost=10)}}))
    daemon_port = free_port()
    cfg = write_config(tmp_path, metrics={"port": daemon_port, "web_config": str(web)})
    tls = {"scheme": "https", "tls_config": {"ca_file": str(pki.ca)}}
    jobs = [{"job_name": "edge-infer", **tls, "basic_auth": {"username": "prometheus", "password": "s3cret"}},
            {"job_name": "wrong-password", **tls, "basic_auth": {"username": "prometheus", "password": "guess"}},
            {"job_name": "no-credentials", **tls}]
    (tmp_path / "prom").mkdir()
    with daemon(cfg), prometheus(prometheus_bin[0], tmp_path / "prom", daemon_port, jobs) as port:
        wait_for(lambda: values(query(port, 'edge_infer_ready{job="edge-infer"}')) == [1.0], 60,
                 "the daemon scraped over https with the right password")

        def up() -> dict[str, float]:
            return {s["metric"]["job"]: float(s["value"][1]) for s in query(port, "up")["data"]["result"]}

        wait_for(lambda: len(up()) == 3, 30, "every job scraped at least once")
        assert up() == {"edge-infer": 1.0, "wrong-password": 0.0, "no-credentials": 0.0}
        targets = {t["labels"]["job"]: t for t in api(port, "/api/v1/targets")["activeTargets"]}
        assert targets["wrong-password"]["lastError"].endswith("401 Unauthorized"), targets["wrong-password"]
        assert targets["edge-infer"]["scrapeUrl"].startswith("https://")
        # The daemon counted the refusals it gave the other two (seen through the job that may read them).
        wait_for(lambda: values(query(port, 'edge_infer_http_refused_total{job="edge-infer",reason="unauthorized"}'
                                      ))[0] >= 2, 30, "the refusals counted")
