"""Metadata filters: the MongoDB-style query documents that Chroma, LangChain's vector stores and Haystack's Qdrant
and Weaviate users already write, checked at the edge and compiled to one predicate over a document's metadata.

    {"product": "tv"}                                   equality (a plain map is a valid filter)
    {"version": {"$gte": 3.2}, "plan": {"$in": ["business", "enterprise"]}}   fields AND-ed
    {"$or": [{"product": "tv"}, {"product": "soundbar"}]}, {"$and": [...]}, {"$not": {...}}
    operators: $eq $ne $gt $gte $lt $lte $in $nin $exists

Values are strings, numbers, booleans or ISO dates ("2024-05-01", compared as dates). A list-valued field (tags)
matches $eq / $in when any of its items does, as in MongoDB. A missing field matches only $ne, $nin and
{"$exists": false}. Anything else (an unknown operator, a range on a boolean, a list where a value belongs) is a
FilterError naming the place in the filter: 422 at the API, never ignored.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Callable

import numpy as np

Predicate = Callable[[dict], bool]
MAX_CLAUSES = 200
MAX_DEPTH = 8
MAX_IN = 1000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_RANGES = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b,
           "$lte": lambda a, b: a <= b}
_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class FilterError(ValueError):
    def __init__(self, where: str, problem: str):
        super().__init__(f"filter {where}: {problem}")
        self.where, self.problem = where, problem


def _date(value: str) -> dt.datetime | None:
    if not _DATE.match(value):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise FilterError(where, "numbers must be finite")
        return value
    if isinstance(value, str):
        return value
    raise FilterError(where, f"expected a string, number, boolean or null, got {type(value).__name__}")


def _comparable(value: Any) -> Any:
    """Numbers stay numbers, ISO dates become datetimes; what cannot be ranged returns None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return _date(value)
    return None


def _values(metadata: dict, field: str) -> list:
    value = metadata.get(field)
    return value if isinstance(value, list) else [value]


def _operator(field: str, op: str, operand: Any, where: str) -> Predicate:
    if op in ("$eq", "$ne"):
        target = _scalar(operand, where)
        hit = (lambda m: field in m and target in _values(m, field))
        return hit if op == "$eq" else (lambda m: not hit(m))
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or len(operand) > MAX_IN:
            raise FilterError(where, f"{op} takes a list of at most {MAX_IN} values")
        targets = [_scalar(v, f"{where}[{i}]") for i, v in enumerate(operand)]
        hit = (lambda m: field in m and any(v in targets for v in _values(m, field)))
        return hit if op == "$in" else (lambda m: not hit(m))
    if op in _RANGES:
        bound = _comparable(operand)
        if bound is None:
            raise FilterError(where, f"{op} takes a number or an ISO date (YYYY-MM-DD), got {operand!r}")
        compare, is_date = _RANGES[op], isinstance(bound, dt.datetime)

        def in_range(m: dict) -> bool:
            for value in _values(m, field):
                mine = _comparable(value)
                if mine is not None and isinstance(mine, dt.datetime) == is_date and compare(mine, bound):
                    return True
            return False
        return in_range
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(where, "$exists takes true or false")
        return (lambda m: field in m) if operand else (lambda m: field not in m)
    raise FilterError(where, f"unknown operator {op!r}; use $eq $ne $gt $gte $lt $lte $in $nin $exists")


class _Compiler:
    def __init__(self):
        self.clauses = 0

    def compile(self, node: Any, where: str = "", depth: int = 0) -> Predicate:
        if depth > MAX_DEPTH:
            raise FilterError(where or "(top)", f"nested deeper than {MAX_DEPTH}")
        if not isinstance(node, dict):
            raise FilterError(where or "(top)", f"expected an object, got {type(node).__name__}")
        parts = []
        for key, value in node.items():
            self.clauses += 1
            if self.clauses > MAX_CLAUSES:
                raise FilterError(where or "(top)", f"more than {MAX_CLAUSES} clauses")
            here = f"{where}.{key}" if where else key
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(here, f"{key} takes a non-empty list of filters")
                subs = [self.compile(v, f"{here}[{i}]", depth + 1) for i, v in enumerate(value)]
                parts.append((lambda m, s=subs: all(p(m) for p in s)) if key == "$and"
                             else (lambda m, s=subs: any(p(m) for p in s)))
            elif key == "$not":
                sub = self.compile(value, here, depth + 1)
                parts.append(lambda m, s=sub: not s(m))
            elif key.startswith("$"):
                raise FilterError(here, f"unknown operator {key!r} here; use $and, $or, $not or a field name")
            elif not _FIELD.match(key):
                raise FilterError(here, "field names are letters, digits, '_', '.', '-' (at most 100)")
            elif isinstance(value, dict):
                if not value:
                    raise FilterError(here, "an empty condition")
                ops = [_operator(key, op, operand, f"{here}.{op}") for op, operand in value.items()]
                parts.append(lambda m, s=ops: all(p(m) for p in s))
            else:
                parts.append(_operator(key, "$eq", value, here))
        return lambda m: all(p(m) for p in parts)


def compile_filter(node: Any) -> Predicate:
    """The predicate of a filter; raises FilterError for anything malformed."""
    return _Compiler().compile(node)


def combined(*filters: dict | None) -> dict | None:
    """Filters AND-ed (a key's own filter with the request's): a request can narrow a key's slice, never widen it."""
    present = [f for f in filters if f]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"$and": present}


def members(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Which ``values`` are in the sorted ids ``allowed``: a binary search each (np.isin sorts both arrays: 7.5 ms
    for 160 values against 50k ids)."""
    at = np.minimum(np.searchsorted(allowed, values), len(allowed) - 1)
    return allowed[at] == values


def canonical(node: dict) -> str:
    """One spelling per filter, for caching what it selects."""
    return json.dumps(node, sort_keys=True, separators=(",", ":"))
