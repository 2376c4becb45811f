"""Files arrive every way producers write them: in slow chunks, written then renamed in, by cp, rsync (temp
name, then rename) and mv from another file system, or still open by a paused writer when the daemon
starts. Each is processed exactly once, and only once complete (its result's sha256 is the whole file's)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ci import skip_unless_ci
from tests.support.daemon import RunningApp, read_result, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images


def assert_once_and_whole(run: RunningApp, root: Path, sources: dict[str, bytes]) -> None:
    wait_for(lambda: files_under(root / "done") == set(sources), 60, f"{sorted(sources)} done")
    for name, data in sources.items():
        assert read_result(root, name)["input_sha256"] == hashlib.sha256(data).hexdigest(), name
    assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == len(sources)
    assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0
    assert not files_under(root / "inbox")


@pytest.fixture
def big(tmp_path) -> Path:
    """A PNG of a few MB: copies of it take many writes."""
    return write_images(tmp_path / "big", 1, size=(1600, 1200), fmt="png")[0]


def test_a_file_written_in_slow_chunks_is_processed_once_when_closed(tmp_path, big):
    data = big.read_bytes()
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        with open(tmp_path / "inbox" / "slow.png", "wb") as f:
            for i in range(0, len(data), len(data) // 4 + 1):
                f.write(data[i:i + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.7)  # pauses longer than settle_s (0.5)
        assert_once_and_whole(run, tmp_path, {"slow.png": data})


def test_a_file_open_by_a_paused_writer_at_start_up_waits_for_its_close(tmp_path, big):
    # The start-up scan finds it with no event to tell it is incomplete; its size stays still far longer
    # than settle_s, but its writer still holds it open: that, not stillness, decides.
    data = big.read_bytes()
    cfg = write_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    with open(tmp_path / "inbox" / "paused.png", "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        with RunningApp(cfg) as run:
            time.sleep(2.0)  # four times settle_s
            assert not files_under(tmp_path / "done") and run.sample(
                "edge_infer_images_total", source="drops", outcome="failed") == 0
            f.write(data[len(data) // 2:])
            f.close()
            assert_once_and_whole(run, tmp_path, {"paused.png": data})


def test_written_then_renamed_in_and_cp_and_mv_across_file_systems(tmp_path, tmpfs, big):
    other_fs = tmpfs("other", "64m")
    imgs = write_images(tmp_path / "staging", 3)
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        (tmp_path / "staging" / "renamed.jpg").write_bytes(imgs[0].read_bytes())
        (tmp_path / "staging" / "renamed.jpg").rename(tmp_path / "inbox" / "renamed.jpg")
        subprocess.run(["cp", str(big), str(tmp_path / "inbox" / "cp.png")], check=True, timeout=30)
        shutil.copy(big, other_fs / "mv.png")
        subprocess.run(["mv", str(other_fs / "mv.png"), str(tmp_path / "inbox" / "mv.png")], check=True, timeout=30)
        assert_once_and_whole(run, tmp_path, {"renamed.jpg": imgs[0].read_bytes(), "cp.png": big.read_bytes(),
                                              "mv.png": big.read_bytes()})


def test_rsync_temp_name_then_rename(tmp_path, big):
    if shutil.which("rsync") is None:
        skip_unless_ci("needs rsync (Debian package rsync; .ci/install-system-deps installs it)")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    sources = {"a.png": big.read_bytes()}
    shutil.copy(big, src / "a.png")
    for i, p in enumerate(write_images(tmp_path / "staging", 3)):
        shutil.copy(p, src / "sub" / f"{i}.jpg")
        sources[f"sub/{i}.jpg"] = p.read_bytes()
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        # --bwlimit: slow enough that rsync's temporary files (.a.png.XXXXXX) exist for a while.
        subprocess.run(["rsync", "-r", "--bwlimit=2000", f"{src}/", f"{tmp_path / 'inbox'}/"], check=True,
                       timeout=60)
        assert_once_and_whole(run, tmp_path, sources)
