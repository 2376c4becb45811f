import queue
import threading

from edge_infer.pipeline.inference import collect_batch


def test_takes_what_is_already_waiting_up_to_max_size_without_waiting():
    q: queue.Queue = queue.Queue()
    for i in range(1, 10):
        q.put(i)
    assert collect_batch(q, 0, max_size=4, max_wait_s=60) == [0, 1, 2, 3]  # 60 s wait never happens
    assert q.qsize() == 6


def test_zero_wait_returns_only_what_is_there():
    q: queue.Queue = queue.Queue()
    assert collect_batch(q, "a", max_size=8, max_wait_s=0) == ["a"]


def test_waits_for_late_items_within_the_window_and_stops_when_full():
    q: queue.Queue = queue.Queue()
    timer = threading.Timer(0.05, lambda: q.put("late"))
    timer.start()
    try:
        assert collect_batch(q, "first", max_size=2, max_wait_s=30) == ["first", "late"]
    finally:
        timer.join()


def test_items_after_the_window_wait_for_the_next_batch():
    q: queue.Queue = queue.Queue()
    gate = threading.Event()
    timer = threading.Timer(0.3, lambda: (q.put("too late"), gate.set()))
    timer.start()
    try:
        assert collect_batch(q, "first", max_size=8, max_wait_s=0.02) == ["first"]
        gate.wait(5)
        assert q.get_nowait() == "too late"
    finally:
        timer.join()
