"""The two heads ``train`` fits in numpy on the backbone's outputs, and each one's ONNX nodes.

- ``knowledge``: the stock head's 1000 ImageNet probabilities summed into the new classes through a
  map ``G`` (1000 x classes). Each ImageNet class's row is the training photos' mean probability of
  it per class, then smoothed over its nearest ImageNet classes by the stock weights' cosine
  similarity (label propagation), so classes no training photo showed inherit their neighbours'
  class. Measured on the shared photos with whole ImageNet classes held out (5-fold): 94.0% top-1,
  90.0% mean recall, where a linear head on the pooled features reached 87.0% / 66.7% and on the
  log-probabilities 87.0% / 71.3%.
- ``linear``: softmax regression on the pooled features (L2, class-balanced, early stopping on the
  validation split): for classes the ImageNet classes do not tell apart (a door open or shut). The
  validation split picks between them by mean per-class recall.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import onnx_wire
from .features import STOCK_OUTPUT

NEIGHBOURS, TEMPERATURE, ALPHA, ROUNDS = 10, 0.1, 0.8, 10
EPS = 1e-6  # keeps log() finite for a class no ImageNet class maps to
L2, LR, MAX_EPOCHS, PATIENCE = 1e-2, 0.05, 300, 30


@dataclass(frozen=True)
class Head:
    kind: str  # knowledge | linear
    weight: np.ndarray
    bias: np.ndarray | None = None
    epochs: int | None = None

    def scores(self, pooled: np.ndarray, stock: np.ndarray) -> np.ndarray:
        if self.kind == "knowledge":
            return np.log(softmax(stock) @ self.weight + EPS)
        return pooled @ self.weight + self.bias

    def onnx(self, pooled: str, output: str) -> tuple[list[bytes], list[bytes]]:
        """(nodes, initializers) computing ``output`` from the backbone's tensors."""
        w = onnx_wire
        if self.kind == "linear":
            return ([w.node("MatMul", [pooled, "head.W"], ["head.mm"], "head/MatMul"),
                     w.node("Add", ["head.mm", "head.b"], [output], "head/Add")],
                    [w.tensor("head.W", self.weight), w.tensor("head.b", self.bias)])
        return ([w.node("Softmax", [STOCK_OUTPUT], ["head.p"], "head/Softmax"),
                 w.node("MatMul", ["head.p", "head.G"], ["head.mm"], "head/MatMul"),
                 w.node("Add", ["head.mm", "head.eps"], ["head.sum"], "head/Add"),
                 w.node("Log", ["head.sum"], [output], "head/Log")],
                [w.tensor("head.G", self.weight),
                 w.tensor("head.eps", np.array([EPS], np.float32))])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def stock_similarity(model: bytes) -> np.ndarray:
    """Cosine similarity of the stock classifier's 1000 weight rows (dequantized)."""
    gemm = next(i for op, i, o in onnx_wire.node_outputs(model) if STOCK_OUTPUT in o)
    dq = next(i for op, i, o in onnx_wire.node_outputs(model) if gemm[1] in o)
    w = onnx_wire.initializer(model, dq[0]).astype(np.float32)
    if len(dq) > 2:
        w = w - onnx_wire.initializer(model, dq[2]).astype(np.float32).reshape(-1, 1)
    w = w * onnx_wire.initializer(model, dq[1]).reshape(-1, 1)
    w /= np.linalg.norm(w, axis=1, keepdims=True) + 1e-12
    return w @ w.T


def fit_knowledge(stock: np.ndarray, y: np.ndarray, n: int, similarity: np.ndarray) -> Head:
    onehot = np.eye(n)[y]
    votes = softmax(stock).T @ onehot / np.maximum(onehot.sum(0), 1)  # class-balanced
    s = similarity.copy()
    np.fill_diagonal(s, -np.inf)
    near = np.argsort(-s, 1)[:, :NEIGHBOURS]
    weights = np.exp(np.take_along_axis(s, near, 1) / TEMPERATURE)
    weights /= weights.sum(1, keepdims=True)
    g = votes
    for _ in range(ROUNDS):
        g = (1 - ALPHA) * votes + ALPHA * (weights[:, :, None] * g[near]).sum(1)
    g /= g.sum(1, keepdims=True) + 1e-12
    return Head("knowledge", g.astype(np.float32))


def fit_linear(x: np.ndarray, y: np.ndarray, n: int, val_x: np.ndarray, val_y: np.ndarray,
               on_epoch=None) -> Head:  # type: ignore[no-untyped-def]
    """Full-batch Adam on standardised features; the weights of the best validation loss kept."""
    # A floor near one quantization step: a feature constant in training must not get a huge weight.
    mu, sd = x.mean(0), np.maximum(x.std(0), 1e-2)
    z, vz = (x - mu) / sd, (val_x - mu) / sd
    w, b = np.zeros((x.shape[1], n)), np.zeros(n)
    counts = np.bincount(y, minlength=n)
    sw = (len(y) / (n * np.maximum(counts, 1)))[y]
    sw /= sw.sum()
    onehot = np.eye(n)[y]
    m, v = [np.zeros_like(w), np.zeros_like(b)], [np.zeros_like(w), np.zeros_like(b)]
    best, since = (np.inf, w.copy(), b.copy(), 0), 0
    for t in range(1, MAX_EPOCHS + 1):
        g = (softmax(z @ w + b) - onehot) * sw[:, None]
        for i, (p, grad) in enumerate(((w, z.T @ g + L2 * w), (b, g.sum(0)))):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            p -= LR * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
        if on_epoch:
            on_epoch()
        if len(val_y):
            loss = -np.log(softmax(vz @ w + b)[np.arange(len(val_y)), val_y] + 1e-12).mean()
            if loss < best[0]:
                best, since = (loss, w.copy(), b.copy(), t), 0
            elif (since := since + 1) >= PATIENCE:
                break
    _, w, b, epochs = best if len(val_y) else (0, w, b, MAX_EPOCHS)
    # Standardisation folded into the weights: the graph multiplies the raw pooled features.
    return Head("linear", (w / sd[:, None]).astype(np.float32),
                (b - (mu / sd) @ w).astype(np.float32), epochs)


def mean_recall(pred: np.ndarray, y: np.ndarray, n: int) -> float:
    per = [float((pred[y == c] == c).mean()) for c in range(n) if (y == c).any()]
    return float(np.mean(per)) if per else 0.0
