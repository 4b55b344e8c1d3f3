"""Another encoder's question-passage cosines on the scale the answer models were fitted on (MiniLM's).

The selector's features and the gap detector's signals include the dense cosine of each prompt passage; both were
fitted on MiniLM, whose cosines for a question's top passages spread over about 0.3-0.8. multilingual-e5-small's sit
in about 0.78-0.92, so on a multilingual collection the gap detector read every question as well covered and refused
none (benchs/results/multilingual_kb.md, before this map). The map is monotone and label-free: the same questions
searched on the same documents under both encoders, their top passages' cosines matched quantile to quantile
(``fit``). Only the answer models read mapped cosines; the relevance gate keeps its own floor per encoder and the
API shows the encoder's own cosines.

A multilingual encoder distilled on a collection (distill/run.py) spreads its cosines much wider than the e5 it
started from (emanualqa: top-3 cosines 0.50-0.78 against 0.84-0.91), where the e5 floor (0.84) would refuse nearly
every question. Its promotion fits a second map, student -> e5, on the held-out questions both encoders answered; it
is kept in the collection's store for that encoder (``COLLECTION_SCALE_META``) and composed with the shipped one, and
the floor is read back through it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SHIPPED_MULTILINGUAL_SCALE = Path(__file__).resolve().parent / "cosine_scale_multilingual.json"
COLLECTION_SCALE_META = "cosine_scale"   # store meta: {"encoder": id, "scale": {...}}, a distilled encoder -> e5
QUANTILES = 41


@dataclass(frozen=True)
class CosineScale:
    source: tuple[float, ...]   # the encoder's cosines at QUANTILES evenly spaced quantiles, increasing
    target: tuple[float, ...]   # MiniLM's at the same quantiles
    report: dict | None = None

    def __post_init__(self):
        if len(self.source) != len(self.target) or len(self.source) < 2:
            raise ValueError("a cosine scale needs as many source as target points, at least two")
        if np.any(np.diff(self.source) < 0) or np.any(np.diff(self.target) < 0):
            raise ValueError("a cosine scale's points must be non-decreasing")

    def __call__(self, cosine: float) -> float:
        """Mapped; beyond the fitted range the ends are shifted, not clipped (an outlier keeps its order)."""
        if cosine < self.source[0]:
            return float(self.target[0] + cosine - self.source[0])
        if cosine > self.source[-1]:
            return float(self.target[-1] + cosine - self.source[-1])
        return float(np.interp(cosine, self.source, self.target))

    @classmethod
    def fit(cls, source: list[float], target: list[float], report: dict | None = None) -> "CosineScale":
        """Quantile matching of two samples of cosines (any sizes)."""
        if not source or not target:
            raise ValueError("fitting a cosine scale needs cosines from both encoders")
        at = np.linspace(0.0, 1.0, QUANTILES)
        return cls(tuple(round(float(x), 5) for x in np.quantile(source, at)),
                   tuple(round(float(x), 5) for x in np.quantile(target, at)), report)

    def then(self, other: "CosineScale") -> "CosineScale":
        """This map, then ``other``, as one map: its points are this one's and those that land on ``other``'s, so
        it is exact between them (both are piecewise linear)."""
        points = sorted({*self.source, *(self.inverse()(x) for x in other.source)})
        return CosineScale(tuple(round(x, 6) for x in points), tuple(round(other(self(x)), 6) for x in points),
                           self.report)

    def inverse(self) -> "CosineScale":
        """Back from the target scale (a floor set on the target scale, read on the source one)."""
        return CosineScale(self.target, self.source, self.report)

    @classmethod
    def load(cls, path: Path = SHIPPED_MULTILINGUAL_SCALE) -> "CosineScale":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cosine scale file {path} is unusable ({exc}); refit it with "
                             f"`python -m benchs.builders.fit_cosine_scale`") from exc

    @classmethod
    def from_dict(cls, spec: dict) -> "CosineScale":
        return cls(tuple(spec["source"]), tuple(spec["target"]), spec.get("report"))

    def to_dict(self) -> dict:
        return {"source": list(self.source), "target": list(self.target), "report": self.report or {}}


def on_scale(hits: list, scale: CosineScale | None) -> list:
    """SearchHits with their cosines mapped by ``scale`` (copies; the originals keep the encoder's own, for citing).
    Without a scale, the hits themselves."""
    if scale is None:
        return hits
    return [replace(h, dense_score=scale(h.dense_score)) if h.dense_score is not None else h for h in hits]
