"""What a saved classifier is: a sparse linear probe over SAE features or a zero-shot feature match,
both stored as JSON and applied to a CSR of SAE activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class LinearProbe:
    """A linear model over SAE features, stored as JSON.

    binary: score = sigmoid(b + sum_f w_f * x_f / s_f), x_f the feature's max activation (or 1 if
    binary input), s_f its training scale. multi-class: softmax over one such sum per class."""

    classes: list
    weights: list[dict[int, float]]  # one dict per logit (1 for binary, n_classes otherwise)
    intercepts: list[float]
    scales: dict[int, float]
    binary_input: bool = False
    positive: object = None  # binary: the class whose probability is the score

    @property
    def multiclass(self) -> bool:
        return len(self.weights) > 1

    @property
    def features(self) -> list[int]:
        return sorted({f for w in self.weights for f in w})

    def to_json(self) -> dict:
        return {
            "type": "linear_probe",
            "classes": self.classes,
            "positive": self.positive,
            "weights": [{str(f): v for f, v in w.items()} for w in self.weights],
            "intercepts": self.intercepts,
            "scales": {str(f): v for f, v in self.scales.items()},
            "binary_input": self.binary_input,
        }

    @classmethod
    def from_json(cls, d: dict) -> "LinearProbe":
        return cls(
            classes=list(d["classes"]),
            weights=[{int(f): float(v) for f, v in w.items()} for w in d["weights"]],
            intercepts=[float(b) for b in d["intercepts"]],
            scales={int(f): float(v) for f, v in d["scales"].items()},
            binary_input=bool(d.get("binary_input", False)),
            positive=d.get("positive"),
        )

    def logits(self, X: sp.csr_matrix) -> np.ndarray:
        """[n, n_logits] from a CSR over all SAE features (only this probe's columns are read)."""
        X = sp.csr_matrix(X)
        if self.binary_input:
            X = X.copy()
            X.data = np.ones_like(X.data)
        W = np.zeros((X.shape[1], len(self.weights)), dtype=np.float64)
        for j, w in enumerate(self.weights):
            for f, v in w.items():
                if f < X.shape[1]:
                    W[f, j] = v / self.scales.get(f, 1.0)
        return np.asarray(X.astype(np.float64) @ W) + np.asarray(self.intercepts)[None, :]

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        """binary: [n] P(positive); multi-class: [n, n_classes] in `classes` order."""
        z = self.logits(X)
        if not self.multiclass:
            return _sigmoid(z[:, 0])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class ZeroShotModel:
    """Scores by features matched to a description, no labels: score = sum_f m_f * min(1, x_f / s_f) / sum_f m_f,
    m_f the feature's match score, s_f its 95th-percentile activation in the corpus it was built on. In [0, 1]."""

    query: str
    weights: dict[int, float]
    scales: dict[int, float]
    classes: tuple = (False, True)
    positive: object = True
    multiclass: bool = False

    @property
    def features(self) -> list[int]:
        return sorted(self.weights)

    def to_json(self) -> dict:
        return {"type": "zero_shot", "query": self.query, "weights": {str(f): v for f, v in self.weights.items()},
                "scales": {str(f): v for f, v in self.scales.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "ZeroShotModel":
        return cls(d["query"], {int(f): float(v) for f, v in d["weights"].items()},
                   {int(f): float(v) for f, v in d["scales"].items()})

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        X = sp.csc_matrix(X)
        total = sum(self.weights.values()) or 1.0
        out = np.zeros(X.shape[0])
        for f, m in self.weights.items():
            if f < X.shape[1]:
                col = np.asarray(X[:, f].todense()).ravel().astype(np.float64)
                out += m * np.minimum(1.0, col / self.scales.get(f, 1.0))
        return out / total


def model_from_json(d: dict):
    return ZeroShotModel.from_json(d) if d.get("type") == "zero_shot" else LinearProbe.from_json(d)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|
