"""The daemon in-process, on real folders with a real watchdog observer and the embedded model."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.daemon import RunningApp, read_result, wait_for, write_config
from tests.support.images import write_images
from tests.support.paths import SAMPLES


def done_names(root: Path, sub: str = "done") -> set[str]:
    base = root / sub
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()} if base.exists() else set()


def test_files_dropped_in_get_results_and_move_to_done(tmp_path):
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        imgs = write_images(tmp_path / "staging", 6)
        for p in imgs:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: len(done_names(tmp_path)) == 6, what="6 inputs in done/")
        for p in imgs:
            r = read_result(tmp_path, p.name)
            assert r["status"] == "ok" and r["source"] == "drops" and r["input"] == p.name
            assert r["input_sha256"] == __import__("hashlib").sha256(p.read_bytes()).hexdigest()
            assert len(r["predictions"]) == 5 and r["image"] == {"width": 320, "height": 240}
            assert r["model"]["precision"] == "int8" and r["finished_at"].endswith("Z")
            assert set(r["timings_ms"]) == {"queue", "preprocess", "inference"}
        # Idle, the inbox holds only what people put there: the claim folder goes too.
        wait_for(lambda: not list((tmp_path / "inbox").iterdir()), 5, "the inbox empty")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 6
        assert run.sample("edge_infer_batch_size_count") >= 2  # 6 inputs, batches of at most 4
        assert run.get("/readyz")[0] == 200 and run.get("/healthz")[0] == 200
        assert 'edge_infer_model_info{name="mobilenet_v2"' in run.get("/metrics")[1]


def test_real_photos_are_classified_correctly(tmp_path, shared):
    cfg = write_config(tmp_path)
    photos = ["n01440764_tench.JPEG", "n02123597_Siamese_cat.JPEG", "n04037443_racer.JPEG"]
    photos = [p for p in photos if (SAMPLES / p).exists()] or sorted(os.listdir(SAMPLES))[:3]
    truth = {r.split(",")[0]: int(r.split(",")[1]) for r in (SAMPLES / "labels.csv").read_text().splitlines()[1:]}
    with RunningApp(cfg):
        (tmp_path / "inbox" / "sub dir").mkdir(parents=True)
        for p in photos:
            shutil.copyfile(SAMPLES / p, tmp_path / "inbox" / "sub dir" / p)
        wait_for(lambda: len(done_names(tmp_path)) == len(photos), what="photos done")
    hits = [read_result(tmp_path, f"sub dir/{p}")["predictions"][0]["index"] == truth[p] for p in photos]
    assert sum(hits) >= len(photos) - 1


def _odd_inputs(d: Path) -> dict[str, str | None]:
    """name -> expected error kind (None: must succeed)."""
    d.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    base.convert("CMYK").save(d / "cmyk.jpg")
    base.convert("L").save(d / "gray.png")
    base.convert("P").save(d / "palette.gif")
    base.convert("RGBA").save(d / "rgba.png")
    Image.fromarray(np.full((40, 40), 50000, np.uint16)).save(d / "sixteen.png")
    frames = [base, base.rotate(90)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    base.save(d / "name with spaces ü.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image\n")
    full = (d / "gray.png").read_bytes()
    base.save(d / "full.jpg", quality=90)
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:300])
    (d / "full.jpg").unlink()
    Image.new("L", (3000, 3000)).save(d / "bomb.png")  # 9 MP over a 5 MP limit below
    del full
    return {"cmyk.jpg": None, "gray.png": None, "palette.gif": None, "rgba.png": None, "sixteen.png": None,
            "anim.gif": None, "name with spaces ü.jpg": None, "empty.jpg": "decode", "text.jpg": "decode",
            "truncated.jpg": "decode", "bomb.png": "too_large"}


def test_every_kind_of_odd_input_ends_in_done_or_failed_with_a_reason(tmp_path):
    cfg = write_config(tmp_path, pipeline={"max_pixels": 5_000_000})
    expected = _odd_inputs(tmp_path / "staging")
    with RunningApp(cfg) as run:
        for name in expected:
            shutil.move(tmp_path / "staging" / name, tmp_path / "inbox" / name)
        wait_for(lambda: len(done_names(tmp_path)) + len(done_names(tmp_path, "failed")) // 1
                 >= len(expected) + sum(1 for k in expected.values() if k), what="all inputs acknowledged")
        for name, kind in expected.items():
            if kind is None:
                assert (tmp_path / "done" / name).exists(), name
                assert read_result(tmp_path, name)["status"] == "ok"
            else:
                err = json.loads((tmp_path / "failed" / f"{name}.error.json").read_text())
                assert err["status"] == "failed" and err["error"]["kind"] == kind and err["error"]["message"], name
                assert (tmp_path / "failed" / name).exists()
                assert not (tmp_path / "results" / "drops" / f"{name}.json").exists()
        failed = sum(1 for k in expected.values() if k)
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == failed
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == len(expected) - failed
        assert run.get("/readyz")[0] == 200  # still serving after bad input


def test_exif_rotated_photo_is_classified_upright(tmp_path, shared):
    photo = SAMPLES / "n02123597_Siamese_cat.JPEG"
    if not photo.exists():
        photo = sorted(SAMPLES.glob("*.JPEG"))[0]
    upright = Image.open(photo)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to display": store the picture turned the other way
    upright.rotate(-90, expand=True).save(tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)
    cfg = write_config(tmp_path)
    with RunningApp(cfg):
        for n in ("sideways.jpg", "upright.jpg"):
            shutil.move(tmp_path / n, tmp_path / "inbox" / n)
        wait_for(lambda: len(done_names(tmp_path)) == 2, what="both done")
    a, b = read_result(tmp_path, "sideways.jpg"), read_result(tmp_path, "upright.jpg")
    assert a["predictions"][0]["index"] == b["predictions"][0]["index"]
    assert a["image"] == b["image"]


def test_names_still_being_written_are_left_alone_until_renamed(tmp_path):
    cfg = write_config(tmp_path)
    src = write_images(tmp_path / "staging", 1)[0]
    with RunningApp(cfg):
        inbox = tmp_path / "inbox"
        for n in ("a.jpg.part", "b.jpg.tmp", ".hidden.jpg", "c.jpg~", "d.jpg.crdownload"):
            shutil.copyfile(src, inbox / n)
        (inbox / ".sync").mkdir()
        shutil.copyfile(src, inbox / ".sync" / "e.jpg")
        import time
        time.sleep(1.5)  # long enough for a settle-based pickup, had any been eligible
        theirs = [p for p in inbox.rglob("*") if ".edge-infer" not in p.parts]  # not the daemon's own
        assert not done_names(tmp_path) and len(theirs) == 7
        os.rename(inbox / "a.jpg.part", inbox / "a.jpg")
        wait_for(lambda: done_names(tmp_path) == {"a.jpg"}, what="renamed file processed")


def test_slowly_written_file_is_processed_once_when_closed(tmp_path):
    cfg = write_config(tmp_path)
    data = write_images(tmp_path / "staging", 1)[0].read_bytes()
    import time
    with RunningApp(cfg) as run:
        with open(tmp_path / "inbox" / "slow.jpg", "wb") as f:
            step = len(data) // 3 + 1
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(0.8)  # pauses longer than settle_s (0.5): only the close may trigger
        wait_for(lambda: done_names(tmp_path) == {"slow.jpg"}, what="slow file done")
        assert read_result(tmp_path, "slow.jpg")["status"] == "ok"
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 1
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0


def test_files_present_at_start_are_processed(tmp_path):
    cfg = write_config(tmp_path)
    for p in write_images(tmp_path / "inbox" / "deep" / "er", 3):
        pass
    with RunningApp(cfg):
        wait_for(lambda: len(done_names(tmp_path)) == 3, what="start-up scan")
    assert done_names(tmp_path) == {f"deep/er/img_{i:03d}.jpg" for i in range(3)}


def test_a_result_already_committed_is_acknowledged_without_recomputing(tmp_path):
    cfg = write_config(tmp_path)
    src = write_images(tmp_path / "staging", 1)[0]
    with RunningApp(cfg):
        shutil.copyfile(src, tmp_path / "inbox" / "x.jpg")
        wait_for(lambda: done_names(tmp_path) == {"x.jpg"}, what="first pass")
    first = (tmp_path / "results" / "drops" / "x.jpg.json").read_bytes()
    # As after a crash between commit and acknowledgement: the same bytes are back in the inbox.
    shutil.copyfile(src, tmp_path / "inbox" / "x.jpg")
    with RunningApp(cfg) as run:
        wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="duplicate") == 1,
                 what="duplicate counted")
        wait_for(lambda: not (tmp_path / "inbox" / "x.jpg").exists(), what="acknowledged")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 0
    assert (tmp_path / "results" / "drops" / "x.jpg.json").read_bytes() == first


def test_after_delete_and_keep(tmp_path):
    sources = [{"name": "del", "type": "folder", "path": "in_del", "after": "delete", "failed_dir": "failed_del"},
               {"name": "keep", "type": "folder", "path": "in_keep", "after": "keep", "failed_dir": "failed_keep"}]
    cfg = write_config(tmp_path, sources)
    src = write_images(tmp_path / "staging", 1)[0]
    with RunningApp(cfg) as run:
        shutil.copyfile(src, tmp_path / "in_del" / "a.jpg")
        shutil.copyfile(src, tmp_path / "in_keep" / "b.jpg")
        wait_for(lambda: run.sample("edge_infer_images_total", source="keep", outcome="ok") == 1
                 and run.sample("edge_infer_images_total", source="del", outcome="ok") == 1, what="both sources")
        wait_for(lambda: not (tmp_path / "in_del" / "a.jpg").exists(), what="deleted")
        assert (tmp_path / "in_keep" / "b.jpg").exists()
    assert read_result(tmp_path, "a.jpg", "del")["status"] == "ok"
    assert read_result(tmp_path, "b.jpg", "keep")["status"] == "ok"


def test_polling_mode_for_network_mounts(tmp_path):
    sources = [{"name": "nfs", "type": "folder", "path": "inbox", "done_dir": "done", "failed_dir": "failed",
                "polling": True, "poll_interval_s": 0.2, "settle_s": 0.3}]
    cfg = write_config(tmp_path, sources)
    with RunningApp(cfg):
        for p in write_images(tmp_path / "staging", 3):
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: len(done_names(tmp_path)) == 3, what="polled files done")
    assert read_result(tmp_path, "img_000.jpg", "nfs")["status"] == "ok"


def test_backpressure_with_a_tiny_queue_loses_nothing(tmp_path):
    cfg = write_config(tmp_path, pipeline={"queue_size": 2, "workers": 1})
    imgs = write_images(tmp_path / "staging", 40, size=(64, 48))
    with RunningApp(cfg) as run:
        for p in imgs:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: len(done_names(tmp_path)) == 40, 60, what="40 done")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 40


def test_stage_and_end_to_end_histograms_are_observed(tmp_path):
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        for p in write_images(tmp_path / "staging", 2):
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: len(done_names(tmp_path)) == 2, what="done")
        for stage in ("queue", "preprocess", "inference", "write"):
            assert run.sample("edge_infer_stage_seconds_count", stage=stage) >= 1, stage
        assert run.sample("edge_infer_end_to_end_seconds_count", source="drops") == 2
        assert run.sample("edge_infer_last_success_timestamp_seconds", source="drops") > 1.7e9


def test_files_written_into_brand_new_folders_are_not_missed(tmp_path):
    # A new folder's inotify watch is added only after its creation event; files written in that gap
    # send no events of their own, so the source scans each new folder.
    cfg = write_config(tmp_path)
    data = write_images(tmp_path / "staging", 1)[0].read_bytes()
    with RunningApp(cfg):
        for i in range(30):
            d = tmp_path / "inbox" / f"d{i}" / "e"
            d.mkdir(parents=True)
            (d / "x.jpg").write_bytes(data)
        wait_for(lambda: len(done_names(tmp_path)) == 30, 60, what="30 files in new folders")
