"""The samples a camera region keeps: layout, the hourly allowance, and the count and byte bounds."""
from __future__ import annotations

import os

from PIL import Image

from edge_infer.sinks.samples import SampleStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def picture(v: int) -> Image.Image:
    return Image.new("RGB", (64, 48), (v, 255 - v, 0))


def test_samples_are_filed_by_region_and_state_as_train_reads_them(tmp_path):
    store = SampleStore(tmp_path, max_files=10, max_bytes=1 << 20, per_hour={"door": 60})
    path = store.keep("door", "open", picture(1), 7, "first")
    assert path.parent == tmp_path / "door" / "open" and path.name.endswith("-000007-first.jpg")
    assert Image.open(path).size == (64, 48)
    assert store.keep("door", "a/b", picture(2), 8, "confirm").parent.name == "a_b"  # one folder level
    assert store.keep("door", ".hidden", picture(3), 9, "start").parent.name == "_.hidden"
    assert not list(tmp_path.rglob("*.tmp"))


def test_at_most_samples_per_hour_and_unsure_ones_spread_over_the_hour(tmp_path):
    clock = Clock()
    store = SampleStore(tmp_path, max_files=100, max_bytes=1 << 20, per_hour={"door": 4}, clock=clock)
    assert store.keep("door", "open", picture(1), 1, "unsure")
    assert store.keep("door", "open", picture(1), 2, "unsure") is None  # within 3600 / 4 s of the last unsure
    assert store.keep("door", "open", picture(1), 3, "start") and store.keep("door", "open", picture(1), 4, "confirm")
    clock.t += 900
    assert store.keep("door", "open", picture(1), 5, "unsure")
    assert store.keep("door", "open", picture(1), 6, "confirm") is None  # four in the last hour
    clock.t += 2701  # the first three are over an hour old
    assert store.keep("door", "open", picture(1), 7, "confirm")
    assert store.saved == 5 and len(list(tmp_path.rglob("*.jpg"))) == 5


def test_the_oldest_are_removed_first_across_state_folders_and_moved_files_count(tmp_path):
    store = SampleStore(tmp_path, max_files=3, max_bytes=1 << 20, per_hour={"door": 1000})
    paths = []
    for i in range(5):
        paths.append(store.keep("door", "open" if i % 2 else "closed", picture(i * 40), i, "start"))
        os.utime(paths[-1], (1000 + i, 1000 + i))  # distinct ages, whatever the clock's resolution
    assert sorted(tmp_path.rglob("*.jpg")) == sorted(paths[2:])
    # The user sorts one into another folder (a move keeps its age), and deletes one: both are counted afresh.
    (tmp_path / "door" / "ajar").mkdir()
    moved = tmp_path / "door" / "ajar" / paths[4].name
    os.replace(paths[4], moved)
    paths[3].unlink()
    newer = store.keep("door", "open", picture(9), 9, "confirm")
    assert sorted(tmp_path.rglob("*.jpg")) == sorted([paths[2], moved, newer])


def test_the_byte_bound_removes_the_oldest(tmp_path):
    store = SampleStore(tmp_path, max_files=100, max_bytes=4096, per_hour={"door": 1000})
    noisy = [Image.effect_noise((64, 64), 80 + i).convert("RGB") for i in range(6)]
    for i, img in enumerate(noisy):
        p = store.keep("door", "open", img, i, "start")
        os.utime(p, (1000 + i, 1000 + i))
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.jpg"))
    assert total <= 4096 and (tmp_path / "door" / "open").exists()
    assert max(tmp_path.rglob("*.jpg")).name.endswith("-000005-start.jpg")  # the newest stays


def test_a_sample_that_cannot_be_written_is_skipped_not_raised(tmp_path):
    blocker = tmp_path / "samples"
    blocker.write_text("a file where the folder should be")
    store = SampleStore(blocker, max_files=10, max_bytes=1 << 20, per_hour={"door": 60})
    assert store.keep("door", "open", picture(1), 1, "first") is None
