"""Acceptance: a daemon serving the stock ImageNet model swaps in the model ``train`` made from the 7-group
set on SIGHUP, labels new photos with the group names and sorts them into ``done/{label}/`` (slow: it
trains once per session, shared with tests/train/test_train_coarse7.py; the runtime path's model too)."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from edge_infer.classifier.manifest import default_model_path, sha256_file
from tests.support.daemon import daemon, free_port, http_status, install_model, read_result, scrape
from tests.support.daemon import wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.shared]




def _drop(root: Path, photo: Path, name: str) -> dict:
    staged = root / "staging" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, staged)
    os.replace(staged, root / "inbox" / name)
    return wait_for(lambda: (root / "results" / "drops" / f"{name}.json").exists() and read_result(root, name),
                    60, f"result for {name}")


@pytest.mark.parametrize("trained", ["coarse7_runtime_model", "coarse7_model"])
def test_a_daemon_on_the_stock_model_swaps_in_the_trained_one_on_sighup_and_sorts_by_group(
        tmp_path, trained, request):
    coarse7_model = request.getfixturevalue(trained)  # the runtime path's model, then torch's
    trained = json.loads((coarse7_model / "model.json").read_text())
    groups = trained["labels"]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    install_model(model_dir, default_model_path().parent)
    (tmp_path / "inbox").mkdir()
    port = free_port()
    cfg = write_config(
        tmp_path, sources=[{"name": "drops", "type": "folder", "path": "inbox", "after": "move",
                            "done_dir": "done/{label}", "failed_dir": "failed"}],
        model={"path": str(model_dir / "model.onnx")}, metrics={"port": port})
    # One held-out photo per group, by the trained model's own self-test list (never trained on).
    expected = json.loads((coarse7_model / "selftest" / "expected.json").read_text())["top1"]
    held_out = {}
    for name, index in expected.items():
        held_out.setdefault(groups[index], coarse7_model / "selftest" / name)
    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 90, "ready")
        before = _drop(tmp_path, next(iter(held_out.values())), "before.jpg")
        imagenet_label = before["predictions"][0]["label"]
        assert imagenet_label not in groups  # the stock model speaks ImageNet
        wait_for((tmp_path / "done" / imagenet_label / "before.jpg").is_file, 10, "before.jpg moved")

        install_model(model_dir, coarse7_model)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'edge_infer_model_reloads_total{outcome="ok"} 1.0' in scrape(port), 60,
                 "the trained model to be swapped in")
        right = 0
        for i, (group, photo) in enumerate(sorted(held_out.items())):
            result = _drop(tmp_path, photo, f"after{i}{photo.suffix}")
            assert result["model"]["sha256"] == sha256_file(model_dir / "model.onnx")
            top1 = result["predictions"][0]["label"]
            assert top1 in groups
            assert {p["label"] for p in result["predictions"]} <= set(groups)
            # The result is written before the input is moved (commit, then acknowledge): wait for the move.
            moved = tmp_path / "done" / top1 / f"after{i}{photo.suffix}"
            wait_for(moved.is_file, 10, f"{moved.name} in done/{top1}")
            right += top1 == group
        # The self-test required these to be right (all but its allowed misses).
        assert right >= len(held_out) - 1, right
        metrics = scrape(port)
        assert any(f'edge_infer_predictions_total{{label="{g}",source="drops"}}' in metrics
                   or f'edge_infer_predictions_total{{source="drops",label="{g}"}}' in metrics for g in groups)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "model reloaded (SIGHUP)" in out
