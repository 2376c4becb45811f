"""Sorting folder inputs by class (``done_dir`` with ``{label}``) and counting results by class, with the
writer's real filing: label folders made as needed, never overwriting, parking, duplicates."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from edge_infer.commit.parked import PARKED_NAME, ParkedInputs
from edge_infer.commit.writer import SourceRoute
from edge_infer.ops.metrics import Metrics
from edge_infer.sinks.filing import label_folder
from tests.support.writer import finished_jobs, make_writer


def _sorting_writer(tmp_path, min_score=0.5, **kwargs):  # type: ignore[no-untyped-def]
    writer, done = make_writer(tmp_path, **kwargs)
    r = writer._routes["s"]
    writer._routes["s"] = SourceRoute("move", tmp_path / "done" / "{label}", r.failed_dir, r.on_done,
                                      tmp_path / "inbox", min_score)
    return writer, done


def test_label_folder_is_one_safe_path_component():
    assert label_folder("zebra") == "zebra" and label_folder("golf cart") == "golf cart"
    for label in ("..", ".", "../../etc", "a/b", "a\\b", ".hidden", "", "x\x00y", "tab\there", "\udc80", "é" * 300):
        name = label_folder(label)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".")
        assert all(ord(c) >= 32 for c in name) and len(name.encode("utf-8")) <= 255, (label, name)


def test_inputs_go_to_their_label_folder_or_unsure_below_min_score(tmp_path):
    writer, done = _sorting_writer(tmp_path)
    jobs = finished_jobs(tmp_path, 3)
    jobs[0].predictions = [{"index": 0, "label": "zebra", "score": 0.9}]
    jobs[1].predictions = [{"index": 1, "label": "../evil", "score": 0.7}]
    jobs[2].predictions = [{"index": 0, "label": "zebra", "score": 0.4}]
    for job in jobs:
        writer.commit(job)
    assert (tmp_path / "done" / "zebra" / jobs[0].rel).exists()
    assert (tmp_path / "done" / "___evil" / jobs[1].rel).exists()
    assert (tmp_path / "done" / "unsure" / jobs[2].rel).exists()
    assert len(done) == 3 and not list((tmp_path / "inbox").iterdir())
    # The results are the usual ones: their predictions say which class, nothing else changed.
    record = json.loads((tmp_path / "results" / "s" / f"{jobs[2].rel}.json").read_text())
    assert record["predictions"][0]["label"] == "zebra" and record["input"] == jobs[2].rel


def test_a_label_folder_holding_other_bytes_under_the_name_takes_a_suffix_never_overwrites(tmp_path):
    writer, _ = _sorting_writer(tmp_path)
    job = finished_jobs(tmp_path, 1)[0]
    job.predictions = [{"index": 0, "label": "zebra", "score": 1.0}]
    (tmp_path / "done" / "zebra").mkdir(parents=True)
    (tmp_path / "done" / "zebra" / job.rel).write_text("someone else's")
    writer.commit(job)
    assert (tmp_path / "done" / "zebra" / job.rel).read_text() == "someone else's"
    record = json.loads((tmp_path / "results" / "s" / f"{job.stored_as}.json").read_text())
    assert job.stored_as != job.rel and record["stored_as"] == job.stored_as
    assert (tmp_path / "done" / "zebra" / job.stored_as).exists()


def test_a_blocked_label_folder_parks_the_input_and_a_retry_files_it_by_its_record(tmp_path):
    writer, done = _sorting_writer(tmp_path)
    job = finished_jobs(tmp_path, 1)[0]
    job.predictions = [{"index": 0, "label": "zebra", "score": 1.0}]
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "zebra").write_text("a file where the class folder goes")
    writer.commit(job)
    assert done == [job] and job.path.exists() and writer.blocked_kind is None
    writer._parked.flush()
    # A restart: the rebuilt job has no predictions in hand; its record on disk says which folder.
    parked = ParkedInputs(tmp_path / "results" / PARKED_NAME)
    parked.load()
    writer2, _ = _sorting_writer(tmp_path, parked=parked)
    (tmp_path / "done" / "zebra").unlink()
    writer2._parked.retry_due(writer2._settle, lambda j: None, writer2._routes)
    assert (tmp_path / "done" / "zebra" / job.rel).exists() and not job.path.exists()


def test_predictions_are_counted_by_the_serving_models_labels_only():
    registry = CollectorRegistry()
    m = Metrics(registry, max_label_classes=3)
    m.init_source("s", "folder")
    get = lambda label: registry.get_sample_value("edge_infer_predictions_total", {"source": "s", "label": label})  # noqa: E731
    m.set_labels(tuple(f"c{i}" for i in range(1000)))  # over the limit: no series at all
    m.predicted("s", "c1")
    assert get("c1") is None
    m.set_labels(("a", "b", "c"))
    assert get("a") == 0 and get("c") == 0  # at 0 from the swap on, so rate() sees the first one
    m.predicted("s", "a")
    m.predicted("s", "zzz")  # a label the model does not have (a batch of the old model): not a new series
    assert get("a") == 1 and get("zzz") is None
    m.set_labels(("a", "d"))  # the shared label goes on counting, the others' series go
    assert get("a") == 1 and get("d") == 0 and get("b") is None
