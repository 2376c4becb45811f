"""The region state machine's rules (issue 18): threshold, consecutive confirmation, unknown."""
from __future__ import annotations

import pytest

from edge_infer.regions.state_machine import UNKNOWN, RegionState


def feed(rs: RegionState, frames: list[tuple[str, float]]) -> list[tuple[str, str, int]]:
    """(state, previous, frame seq) of each change the frames confirm."""
    out = []
    for seq, (label, score) in enumerate(frames):
        c = rs.observe(label, score, {"seq": seq, "timestamp": seq / 2}, f"t{seq}")
        if c is not None:
            out.append((c.state, c.previous, c.frame["seq"]))
    return out


def test_unknown_until_the_first_confirmation_after_confirm_frames_agreeing_frames():
    rs = RegionState("garage", "door")
    assert rs.state == UNKNOWN
    assert feed(rs, [("open", 0.9)] * 5) == [("open", UNKNOWN, 2)]  # the third frame confirms, once
    assert rs.state == "open"


def test_one_change_per_switch_none_while_a_scene_holds():
    rs = RegionState("garage", "door", confirm_frames=3)
    frames = [("open", 0.95)] * 6 + [("closed", 0.9)] * 6 + [("open", 0.85)] * 6
    assert feed(rs, frames) == [("open", UNKNOWN, 2), ("closed", "open", 8), ("open", "closed", 14)]


def test_single_frames_of_another_scene_spliced_in_change_nothing():
    rs = RegionState("garage", "door", confirm_frames=3)
    frames = [("open", 0.9)] * 4 + [("closed", 0.99), ("open", 0.9), ("closed", 0.99), ("closed", 0.99),
                                    ("open", 0.9)] + [("open", 0.9)] * 3
    assert feed(rs, frames) == [("open", UNKNOWN, 2)]


def test_frames_below_the_threshold_never_flip_the_state_and_break_a_run():
    rs = RegionState("garage", "door", threshold=0.8, confirm_frames=3)
    feed(rs, [("open", 0.9)] * 3)
    assert feed(rs, [("closed", 0.79)] * 10) == []  # sure of nothing: no change, however many
    assert feed(rs, [("closed", 0.9), ("closed", 0.9), ("closed", 0.5), ("closed", 0.9), ("closed", 0.9)]) == []
    assert rs.state == "open"
    c = rs.observe("closed", 0.8, {"seq": 99}, "t99")  # at the threshold counts: the third in a row
    assert c is not None and (c.state, c.previous, c.score) == ("closed", "open", 0.8)


def test_the_camera_going_down_makes_the_region_unknown_once():
    rs = RegionState("garage", "door", confirm_frames=1)
    assert rs.down("t0") is None  # already unknown: nothing to announce
    rs.observe("open", 0.9, {"seq": 1}, "t1")
    c = rs.down("t2")
    assert c is not None and c.event() == {"source": "garage", "region": "door", "state": UNKNOWN,
                                           "previous": "open", "score": None, "frame": {}, "at": "t2"}
    assert rs.down("t3") is None and rs.state == UNKNOWN
    assert feed(rs, [("open", 0.9)]) == [("open", UNKNOWN, 0)]  # and is confirmed afresh when it returns


def test_an_event_has_the_issues_fields():
    rs = RegionState("cam", "bins", confirm_frames=1)
    c = rs.observe("at_curb", 0.97, {"seq": 7, "timestamp": 3.5}, "2026-12-02T18:00:00.000Z")
    assert c is not None and set(c.event()) == {"source", "region", "state", "previous", "score", "frame", "at"}


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"threshold": -0.1}, {"confirm_frames": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RegionState("cam", "r", **kwargs)


def test_with_states_declared_another_label_counts_as_a_frame_below_the_threshold():
    r = RegionState("cam", "door", confirm_frames=2, states=("open", "closed"))
    assert r.observe("open", 0.9, {}, "t") is None
    assert r.observe("tabby", 0.99, {}, "t") is None  # breaks the run, like a frame below the threshold
    assert r.observe("open", 0.9, {}, "t") is None
    assert r.observe("open", 0.9, {}, "t").state == "open"


def test_started_marks_the_first_frame_of_a_run_towards_a_new_state():
    r = RegionState("cam", "door", confirm_frames=3)
    seen = []
    for label in ("open", "open", "open", "open", "closed", "closed", "open"):
        r.observe(label, 0.9, {}, "t")
        seen.append(r.started)
    assert seen == [True, False, False, False, True, False, False]
