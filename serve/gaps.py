"""What the docs are missing: the questions kbqa abstained on or that customers rated unhelpful,
clustered with the collection's own encoder, largest cluster first: what the docs team should write next.

Clustering is one greedy pass (a question joins the most similar cluster whose centroid is within ``threshold``
cosine, else starts one), so the same log gives the same report and no extra library is needed for a few
thousand questions. A cluster is ``covered`` once most of its questions (up to ``COVERAGE_SAMPLE``) are answered
now, by the same gates as the API, and an unhelpful-rated question counts only when the answer now cites a document
the rated answer did not: ingesting the page that was missing closes the gap on the next report.
"""
from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np

from retrieval.encoder import encode_queries
from serve.customer import customer_fields

COVERAGE_SAMPLE = 5
DEFAULT_THRESHOLD = 0.7   # cosine to a cluster's centroid; chosen on the tune split by benchs/quality/gap_clusters.py (pairwise F1)


def _normal(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower())


def greedy_clusters(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Rows of L2-normalised ``vectors`` grouped: each joins the nearest centroid at cosine >= threshold."""
    clusters: list[list[int]] = []
    sums = np.zeros((len(vectors), vectors.shape[1]), dtype=np.float64)   # row c: cluster c's vector sum
    for row, vector in enumerate(vectors):
        if clusters:
            live = sums[:len(clusters)]
            similarity = live @ vector / np.maximum(np.linalg.norm(live, axis=1), 1e-12)
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                clusters[best].append(row)
                sums[best] += vector
                continue
        sums[len(clusters)] = vector
        clusters.append([row])
    return clusters


def gap_report(service, collection: str = "default", since_days: float = 30.0, threshold: float = DEFAULT_THRESHOLD,
               examples: int = 5, check_coverage: bool = True, include_all: bool = False,
               key_ids: list[str] | None = None, filter: dict | None = None) -> dict:
    """The report: {"collection", "since_days", "questions", "clusters": [...]}, largest cluster first;
    ``include_all`` adds each cluster's every distinct question (benchmarks). A slice's report (serve/auth.py):
    ``key_ids``, only the questions its keys asked; ``filter``, its documents only for the nearest document and the
    coverage check."""
    target = service.collection(collection)   # UnknownCollection before any work
    logged = service.feedback.gap_questions(collection, time.time() - since_days * 86400, key_ids)
    grouped: dict[str, list[dict]] = {}
    for entry in logged:   # the same question asked twice is one point with two askings
        grouped.setdefault(_normal(entry["question"]), []).append(entry)
    keys = list(grouped)
    clusters = []
    if keys:
        texts = [grouped[k][0]["question"] for k in keys]
        vectors = np.asarray(encode_queries(target.encoder, texts), dtype=np.float32)
        for members in greedy_clusters(vectors, threshold):
            centroid = vectors[members].mean(axis=0)
            ordered = sorted(members, key=lambda i: -float(vectors[i] @ centroid))
            entries = [e for i in members for e in grouped[keys[i]]]
            representative = texts[ordered[0]]
            top = service.search(representative, 1, collection, filter)
            nearest = ({"doc_id": top[0].chunk.doc_id, "title": top[0].chunk.title, "source": top[0].chunk.source,
                        "score": round(top[0].score, 4)} if top else None)
            cluster = {"size": len(entries), "representative": representative,
                       "examples": [texts[i] for i in ordered[:examples]],
                       "reasons": dict(Counter(e["reason"] for e in entries)),
                       "first_seen": min(e["created"] for e in entries), "last_seen": max(e["created"] for e in entries),
                       "nearest_document": nearest, "customers": customer_counts(entries)}
            if include_all:
                cluster["all_questions"] = [texts[i] for i in ordered]
            if check_coverage and service.pipeline is not None:
                cluster["answered_now"] = _answered_now(service, collection, [grouped[keys[i]][0] for i in ordered],
                                                        filter)
                cluster["covered"] = cluster["answered_now"] > 0.5
            clusters.append(cluster)
    clusters.sort(key=lambda c: (-c["size"], -c["last_seen"]))
    return {"collection": collection, "since_days": since_days, "questions": len(logged), "clusters": clusters}


def customer_counts(entries: list[dict]) -> dict[str, dict[str, int]]:
    """field -> value -> questions, over the customer contexts the entries came with (ids left out: a team reads
    which plans and products hit a gap, not who)."""
    counts: dict[str, Counter] = {}
    for entry in entries:
        for name, value in customer_fields(entry.get("customer")).items():
            if name != "id":
                for item in value if isinstance(value, list) else [value]:
                    counts.setdefault(name, Counter())[str(item)] += 1
    return {name: dict(c.most_common()) for name, c in sorted(counts.items())}


def _answered_now(service, collection: str, entries: list[dict], filter: dict | None = None) -> float:
    """Share of a cluster's questions (its most central ones) that kbqa answers now, not recorded as answers."""
    answered = 0
    sample = entries[:COVERAGE_SAMPLE]
    for entry in sample:
        answer = service.pipeline.run(entry["question"],
                                      lambda question: service.search(question, 5, collection, filter))
        cited = {c.doc_id for c in answer.citations}
        answered += (not answer.abstained) and (entry["reason"] != "unhelpful" or bool(cited - set(entry["cited"])))
    return round(answered / len(sample), 3)


def format_report(report: dict) -> str:
    lines = [f"collection {report['collection']}: {report['questions']} questions abstained on or rated unhelpful "
             f"in the last {report['since_days']:g} days, {len(report['clusters'])} clusters (largest first)", ""]
    for n, cluster in enumerate(report["clusters"], start=1):
        state = "" if "covered" not in cluster else (" - COVERED now" if cluster["covered"] else " - open")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(cluster["reasons"].items()))
        lines.append(f"{n}. [{cluster['size']}] {cluster['representative']}  ({reasons}){state}")
        for example in cluster["examples"][1:]:
            lines.append(f"     - {example}")
        if cluster.get("customers"):
            lines.append("     customers: " + "; ".join(
                f"{name} " + ", ".join(f"{value} {n}" for value, n in values.items())
                for name, values in cluster["customers"].items()))
        if cluster["nearest_document"]:
            doc = cluster["nearest_document"]
            lines.append(f"     nearest document: {doc['source']} - {doc['title']} ({doc['score']:.3f})")
    return "\n".join(lines)
