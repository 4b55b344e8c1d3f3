"""Answers given and what users said about them, in $KBQA_HOME/feedback.sqlite: material for the next fine-tune."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY, created REAL NOT NULL, collection TEXT NOT NULL, question TEXT NOT NULL,
    answer TEXT NOT NULL, abstained INTEGER NOT NULL, grounding TEXT NOT NULL, citations TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT NOT NULL REFERENCES answers(answer_id),
    helpful INTEGER NOT NULL, comment TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_by_answer ON feedback (answer_id);
"""
# Columns added after the first release: (name, declaration), added to an older file when it is opened.
ADDED_COLUMNS = (("answers", "conversation_id", "TEXT"), ("answers", "handoff_reason", "TEXT"),
                 ("feedback", "corrected_answer", "TEXT"), ("answers", "key_id", "TEXT"), ("answers", "customer", "TEXT"))
LOCAL = ""   # key_id of answers given in keyless local mode


def _asked_by(key_ids: list[str] | None) -> tuple[str, list[str]]:
    """SQL (" AND ...") and parameters keeping answers asked through ``key_ids``; nothing for None."""
    if key_ids is None:
        return "", []
    return f" AND a.key_id IN ({','.join('?' * len(key_ids)) or 'NULL'})", list(key_ids)


class UnknownAnswer(LookupError):
    """Feedback names an answer id this server never gave, or a feedback id that does not exist."""


class FeedbackStore:
    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        for table, column, declaration in ADDED_COLUMNS:
            have = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._db.execute("CREATE INDEX IF NOT EXISTS answers_by_conversation ON answers (conversation_id)")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record_answer(self, collection: str, answer, conversation_id: str | None = None,
                      key_id: str | None = None, customer: dict | None = None) -> str:
        """Records ``answer`` under its own ``answer_id`` (a fresh one when it has none); returns the id. ``key_id``:
        the API key that asked; a conversation belongs to the key and collection that wrote it. ``customer``: the
        request's customer context (serve/customer.py), kept for the conversation's next turns and the gaps report."""
        answer_id = answer.answer_id or uuid.uuid4().hex
        citations = json.dumps([{"n": c.n, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "source": c.source}
                                for c in answer.citations])
        handoff = answer.handoff
        with self._lock:
            self._db.execute("INSERT INTO answers (answer_id, created, collection, question, answer, abstained, "
                             "grounding, citations, conversation_id, handoff_reason, key_id, customer) VALUES (?, ?, ?, "
                             "?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (answer_id, time.time(), collection, answer.question, answer.answer, int(answer.abstained),
                              answer.grounding, citations, conversation_id, handoff.reason, key_id or LOCAL,
                              json.dumps(customer) if customer else None))
        return answer_id

    def questions(self, collection: str) -> list[str]:
        """Every question asked of ``collection``, oldest first (`kbqa distill` learns from them, scrubbed)."""
        with self._lock:
            rows = self._db.execute("SELECT question FROM answers WHERE collection = ? ORDER BY created",
                                    (collection,)).fetchall()
        return [r["question"] for r in rows]

    def gap_questions(self, collection: str, since: float, key_ids: list[str] | None = None) -> list[dict]:
        """Questions of ``collection`` asked since ``since`` (epoch seconds) that kbqa abstained on or that were
        rated unhelpful: {"question", "reason" (abstained | unhelpful), "cited" doc sources, "created", "customer"}.
        ``key_ids``: only those asked through these keys (a slice's keys, serve/auth.py); None: every one."""
        only, params = _asked_by(key_ids)
        with self._lock:
            rows = self._db.execute(
                "SELECT a.answer_id, a.question, a.abstained, a.citations, a.created, a.customer, "
                "EXISTS (SELECT 1 FROM feedback f WHERE f.answer_id = a.answer_id AND f.helpful = 0) AS unhelpful "
                f"FROM answers a WHERE a.collection = ? AND a.created >= ?{only} ORDER BY a.created",
                (collection, since, *params)).fetchall()
        return [{"question": r["question"], "reason": "abstained" if r["abstained"] else "unhelpful",
                 "cited": [c.get("doc_id", c["source"]) for c in json.loads(r["citations"])], "created": r["created"],
                 "customer": json.loads(r["customer"]) if r["customer"] else None}
                for r in rows if r["abstained"] or r["unhelpful"]]

    def correct(self, feedback_id: int, corrected_answer: str) -> None:
        """An admin's right answer for the rated answer."""
        with self._lock:
            updated = self._db.execute("UPDATE feedback SET corrected_answer = ? WHERE feedback_id = ?",
                                       (corrected_answer, feedback_id)).rowcount
        if not updated:
            raise UnknownAnswer(f"no feedback with id {feedback_id}")

    def feedback_owner(self, feedback_id: int) -> tuple[str, str] | None:
        """(collection, asking key id) of the answer a feedback rates; None when there is no such feedback."""
        with self._lock:
            row = self._db.execute("SELECT a.collection, a.key_id FROM feedback f JOIN answers a USING (answer_id) "
                                   "WHERE f.feedback_id = ?", (feedback_id,)).fetchone()
        return (row["collection"], row["key_id"]) if row else None

    def training_answers(self, collection: str) -> list[dict]:
        """What `kbqa train-generator --from-feedback` learns from: answers rated helpful and never unhelpful (their
        own text), and answers an admin corrected (the correction, the newest one): {"question", "answer",
        "chunk_ids" (the cited chunks), "corrected"}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.answer_id, a.question, a.answer, a.abstained, a.citations, "
                "MIN(f.helpful) AS all_helpful, "
                "(SELECT g.corrected_answer FROM feedback g WHERE g.answer_id = a.answer_id AND "
                " g.corrected_answer IS NOT NULL ORDER BY g.feedback_id DESC LIMIT 1) AS corrected "
                "FROM answers a JOIN feedback f USING (answer_id) WHERE a.collection = ? GROUP BY a.answer_id "
                "ORDER BY a.created", (collection,)).fetchall()
        out = []
        for r in rows:
            chunk_ids = [c["chunk_id"] for c in json.loads(r["citations"])]
            if r["corrected"]:
                out.append({"question": r["question"], "answer": r["corrected"], "chunk_ids": chunk_ids,
                            "corrected": True})
            elif r["all_helpful"] and not r["abstained"]:
                out.append({"question": r["question"], "answer": r["answer"], "chunk_ids": chunk_ids,
                            "corrected": False})
        return out

    def conversation(self, conversation_id: str, collection: str, key_id: str | None, since: float,
                     turns: int) -> tuple[list[dict], dict | None]:
        """The conversation kept server-side: its last ``turns`` question/answer pairs asked since ``since`` (epoch
        seconds), oldest first, as history messages, and the customer context of its latest turn that had one.
        Scoped like every conversation lookup: another key's or collection's turns under the same id are not it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT question, answer, abstained, customer FROM answers WHERE conversation_id = ? AND collection = ? "
                "AND key_id = ? AND created >= ? ORDER BY created DESC LIMIT ?",
                (conversation_id, collection, key_id or LOCAL, since, turns)).fetchall()
        history = []
        for row in reversed(rows):
            history += [{"role": "user", "content": row["question"]},
                        {"role": "assistant", "content": row["answer"]}]
        customer = next((json.loads(r["customer"]) for r in rows if r["customer"]), None)
        return history, customer

    def conversation_rated_unhelpful(self, conversation_id: str | None, collection: str,
                                     key_id: str | None = None) -> bool:
        """Whether an answer of this conversation was rated unhelpful. Conversation ids are the clients' own: the
        same id sent by another key or for another collection is another conversation, never this one."""
        if not conversation_id:
            return False
        with self._lock:
            row = self._db.execute("SELECT 1 FROM feedback f JOIN answers a USING (answer_id) "
                                   "WHERE a.conversation_id = ? AND a.collection = ? AND a.key_id = ? "
                                   "AND f.helpful = 0 LIMIT 1",
                                   (conversation_id, collection, key_id or LOCAL)).fetchone()
        return row is not None

    def add_feedback(self, answer_id: str, helpful: bool, comment: str = "") -> int:
        with self._lock:
            if self._db.execute("SELECT 1 FROM answers WHERE answer_id = ?", (answer_id,)).fetchone() is None:
                raise UnknownAnswer(f"no answer with id {answer_id!r}")
            cursor = self._db.execute("INSERT INTO feedback (answer_id, helpful, comment, created) VALUES (?, ?, ?, ?)",
                                      (answer_id, int(helpful), comment, time.time()))
            return int(cursor.lastrowid)

    def answer_collection(self, answer_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT collection FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
        return row["collection"] if row else None

    def list_feedback(self, limit: int = 100, helpful: bool | None = None, collections: list[str] | None = None,
                      key_ids: list[str] | None = None) -> list[dict]:
        """The newest feedback with its answers; ``key_ids``: only answers asked through these keys."""
        query = ("SELECT f.feedback_id, f.answer_id, f.helpful, f.comment, f.created, a.collection, a.question, "
                 "a.answer, a.abstained, a.grounding, a.citations FROM feedback f JOIN answers a USING (answer_id)")
        where, params = [], []
        if helpful is not None:
            where.append("f.helpful = ?")
            params.append(int(helpful))
        if collections is not None:
            where.append(f"a.collection IN ({','.join('?' * len(collections))})")
            params += collections
        if key_ids is not None:
            only, ids = _asked_by(key_ids)
            where.append(only.removeprefix(" AND "))
            params += ids
        if where:
            query += " WHERE " + " AND ".join(where)
        params = tuple(params)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY f.feedback_id DESC LIMIT ?", params + (limit,)).fetchall()
        return [{**dict(r), "helpful": bool(r["helpful"]), "abstained": bool(r["abstained"]),
                 "citations": json.loads(r["citations"])} for r in rows]
