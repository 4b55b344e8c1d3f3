"""The customer in the request: their plan, product, version and locale turned into the right slice of the docs.

A collection's *customer rules* (stored with it; `kbqa customer-rules`, `PUT /v1/collections/{c}/customer-rules`) map a
customer field to a document metadata field and a use:

    {"product": {"metadata": "product", "use": "filter"},     # hard: only this product's documents ...
     "plan":    {"metadata": "plans",   "use": "prefer"}}     # soft: this plan's documents first

- ``filter``: the documents whose field equals the customer's value (a list field: holds it), **or that do not carry
  the field at all**: an article tagged for no product in particular is for every product's customers. AND-ed into
  the request's own filter and the key's slice, so it can only narrow them.
- ``prefer``: hits whose field matches move up: their score is raised by ``PREFER_BOOST`` times the share of the
  preferences they match, over twice the hits asked for, then cut back to ``k``.

A customer field without a rule, or a rule whose field the customer did not send, is not used; the answer's
``context`` says what was used, how, and what was ignored, so a team sees why an answer was scoped as it was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from retrieval.filters import FilterError, compile_filter

USES = ("filter", "prefer")
MAX_RULES = 20
PREFER_BOOST = 0.5   # a fully matching hit's score x1.5: enough to pass an unmatched hit of close rank, not a far one
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class RulesError(ValueError):
    """Malformed customer rules: the message names the rule and what is wrong."""


def check_rules(rules) -> dict:
    """``rules`` as stored: {customer field: {"metadata": field, "use": "filter" | "prefer"}}; RulesError else."""
    if not isinstance(rules, dict):
        raise RulesError(f"customer rules are a JSON object of customer field -> rule, got {type(rules).__name__}")
    if len(rules) > MAX_RULES:
        raise RulesError(f"at most {MAX_RULES} customer rules, got {len(rules)}")
    checked = {}
    for name, rule in rules.items():
        if not _NAME.match(name):
            raise RulesError(f"rule {name!r}: a customer field name is letters, digits, '_', '.' or '-'")
        if not isinstance(rule, dict) or set(rule) - {"metadata", "use"}:
            raise RulesError(f"rule {name!r}: expected {{\"metadata\": FIELD, \"use\": \"filter\" | \"prefer\"}}")
        metadata, use = rule.get("metadata", name), rule.get("use", "filter")
        if not isinstance(metadata, str) or not _NAME.match(metadata):
            raise RulesError(f"rule {name!r}: metadata must be a metadata field name, got {metadata!r}")
        if use not in USES:
            raise RulesError(f"rule {name!r}: use must be one of {', '.join(USES)}, got {use!r}")
        checked[name] = {"metadata": metadata, "use": use}
    return checked


def customer_fields(customer: dict | None) -> dict:
    """The customer's fields, flat: the standard ones and the free ``fields`` (a standard one wins)."""
    if not customer:
        return {}
    flat = dict(customer.get("fields") or {})
    flat.update({k: v for k, v in customer.items() if k != "fields" and v is not None})
    return flat


@dataclass
class CustomerScope:
    """What a customer's context does to one request."""
    filter: dict | None = None                        # hard part, AND-ed into the request's filter
    prefer: dict[str, object] = field(default_factory=dict)   # metadata field -> the customer's value
    used: dict = field(default_factory=dict)          # customer field -> {"metadata", "use", "value"}
    ignored: list[str] = field(default_factory=list)  # customer fields no rule maps

    def search(self, search, query: str, k: int) -> list:
        """The top ``k`` of ``search(query, n, filter)`` within this scope: the hard part AND-ed into ``filter``
        by the caller, the preferences over twice the hits, then cut back to ``k``."""
        if not self.prefer:
            return search(query, k)
        return preferred(search(query, 2 * k), self.prefer, k)

    def context(self) -> dict | None:
        """What the answer reports (None when no customer came)."""
        return {"used": self.used, "ignored": self.ignored} if self.used or self.ignored else None


def scope_of(customer: dict | None, rules: dict) -> CustomerScope:
    """The scope ``rules`` give ``customer`` (already validated by the request schema)."""
    fields = customer_fields(customer)
    scope = CustomerScope(ignored=sorted(f for f in fields if f not in rules and f != "id"))
    clauses = []
    for name, rule in rules.items():
        if name not in fields:
            continue
        value, metadata = fields[name], rule["metadata"]
        scope.used[name] = {"metadata": metadata, "use": rule["use"], "value": value}
        if rule["use"] == "filter":
            wanted = {"$in": value} if isinstance(value, list) else value   # several products: any of them
            clauses.append({"$or": [{metadata: wanted}, {metadata: {"$exists": False}}]})
        else:
            scope.prefer[metadata] = value
    if clauses:
        scope.filter = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        try:
            compile_filter(scope.filter)
        except FilterError as exc:   # a value the filter language cannot hold (a nested object): say which
            raise RulesError(f"customer context: {exc}") from exc
    return scope


def _matches(value, wanted) -> bool:
    have = set(value) if isinstance(value, list) else {value}
    return bool(have & (set(wanted) if isinstance(wanted, list) else {wanted}))


def preferred(hits: list, prefer: dict, k: int) -> list:
    """``hits`` (best first, about 2k of them) reordered so that those matching the preferences move up; the best
    ``k``. Ties keep retrieval's order."""
    if not prefer:
        return hits[:k]

    def boosted(hit) -> float:
        metadata = hit.metadata or {}
        share = sum(_matches(metadata.get(f), v) for f, v in prefer.items() if f in metadata) / len(prefer)
        return hit.score + abs(hit.score) * PREFER_BOOST * share   # a negative cosine (dense mode) moves up too

    return sorted(hits, key=lambda h: -boosted(h))[:k]
