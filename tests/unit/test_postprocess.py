import numpy as np

from edge_infer.classifier.postprocess import softmax, top_k


def test_softmax_is_stable_and_sums_to_one():
    p = softmax(np.array([[1000.0, 1001.0, 999.0]], np.float32))
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-6 and p.argmax() == 1


def test_top_k_sorted_with_labels_and_probabilities():
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
    rows = top_k(logits, 3, ["a", "b", "c", "d"])
    assert [p["index"] for p in rows[0]] == [1, 3, 2]
    assert [p["label"] for p in rows[0]] == ["b", "d", "c"]
    scores = [p["score"] for p in rows[0]]
    assert scores == sorted(scores, reverse=True)
    assert abs(rows[1][0]["score"] - np.exp(5) / (np.exp(5) + 3)) < 1e-5


def test_top_k_larger_than_classes_is_clamped():
    rows = top_k(np.zeros((1, 3), np.float32), 10, ["a", "b", "c"])
    assert len(rows[0]) == 3
