"""Request and response models of the HTTP API (the CLI's --json output uses the same shapes)."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ingest.records import MAX_ID_CHARS
from retrieval.filters import FilterError, compile_filter

from retrieval.home import COLLECTION_NAME

CollectionPath = Annotated[str, Path(pattern=COLLECTION_NAME.pattern, description="collection name")]
CONVERSATION_ID = r"^[A-Za-z0-9_.:-]{1,100}$"
_COLLECTION = Field("default", pattern=COLLECTION_NAME.pattern, description="collection to search")
# Request bodies are JSON: a number is a number and a boolean a boolean ("k": "5", "k": true, "stream": "yes",
# "helpful": 0 are refused, not guessed at); unknown fields are refused too.
STRICT = ConfigDict(extra="forbid", strict=True)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


Question = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_not_blank)]


def _valid_filter(node: dict | None) -> dict | None:
    if node is not None:
        try:
            compile_filter(node)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
    return node or None


MetadataFilter = Annotated[dict | None, AfterValidator(_valid_filter), Field(
    None, description='a metadata filter, MongoDB-style as in Chroma and LangChain: {"product": "tv"}, '
                      '{"version": {"$gte": 3}}, $in, $nin, $ne, $exists, $and, $or, $not (README "Filters")')]


class SearchRequest(BaseModel):
    model_config = STRICT
    query: Question
    k: int = Field(5, ge=1, le=50)
    collection: str = _COLLECTION
    filter: MetadataFilter = None


class SearchResult(BaseModel):
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    metadata: dict = Field(default_factory=dict, description="the document's metadata")


class SearchResponse(BaseModel):
    query: str
    results: list[SearchResult]


class Turn(BaseModel):
    model_config = STRICT
    role: Literal["user", "assistant"]
    content: str = Field(max_length=2000)


_Text = Annotated[str, Field(min_length=1, max_length=200)]
CustomerValue = _Text | int | float | bool | Annotated[list[_Text], Field(max_length=20)]
CustomerField = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")]


class CustomerIn(BaseModel):
    """Who is asking (serve/customer.py): the collection's customer rules turn these fields into filters or
    preferences; fields without a rule are ignored (and reported as such in the answer's ``context``)."""
    model_config = STRICT
    id: _Text | None = Field(None, description="the customer's id in your systems (reported, never a filter)")
    plan: _Text | None = None
    product: _Text | None = None
    version: _Text | None = Field(None, description="a string: 3.10 must not read as 3.1")
    locale: _Text | None = None
    fields: dict[CustomerField, CustomerValue] = Field(default_factory=dict, max_length=20,
                                                       description="anything else a rule may name")

    def sent(self) -> dict:
        """What the client sent, as serve/customer.py reads it (unset fields left out)."""
        return self.model_dump(exclude_none=True, exclude_defaults=True)


class CustomerRules(BaseModel):
    """A collection's customer rules: customer field -> {"metadata": document metadata field, "use": "filter" (only
    documents with that value, or without the field) | "prefer" (documents with that value first)}."""
    model_config = STRICT
    rules: dict[CustomerField, dict] = Field(max_length=20)


class AskRequest(BaseModel):
    model_config = STRICT
    question: Question
    k: int = Field(5, ge=1, le=50)
    collection: str = _COLLECTION
    filter: MetadataFilter = None
    history: list[Turn] = Field(default_factory=list, max_length=20,
                                description="earlier turns, oldest first: a follow-up question is made standalone")
    stream: bool = Field(False, description="answer as Server-Sent Events: `token` events as the generator "
                         "writes, then one `final` event holding the AskResponse")
    conversation_id: str | None = Field(None, pattern=CONVERSATION_ID, description="the client's id for this "
                                        "conversation: kbqa keeps its turns (and customer) so a follow-up may send "
                                        "neither; an unhelpful rating earlier in it recommends a hand-off")
    customer: CustomerIn | None = Field(None, description="who is asking: scoped by the collection's customer rules")


class CitationOut(BaseModel):
    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    score: float
    metadata: dict = Field(default_factory=dict, description="the cited document's metadata")


class HandoffOut(BaseModel):
    recommended: bool
    reason: str | None = Field(None, description="asks for a person, frustration, abstained, low confidence or "
                               "repeated failure")


class AskResponse(BaseModel):
    question: str
    answer: str
    abstained: bool
    grounding: str = Field(description="extractive (sentences quoted from the passages, each cited: the default "
                           "KBQA_ANSWER_MODE=select, or the fallback for a generated answer that failed a check, "
                           "named in fallback_reason), generated (the generator's answer passed the support and "
                           "degeneration checks) or abstained")
    citations: list[CitationOut]
    unsupported: list[str] = Field(description="generated sentences the support check rejected")
    answer_id: str = Field(description="refer to this answer in POST /v1/feedback")
    rewritten_question: str | None = Field(None, description="the standalone question used, when history changed it")
    timings_ms: dict[str, float]
    answerability: float | None = Field(None, description="p(the passages hold the answer): 1 - the gap detector's "
                                        "p(knowledge gap), or the opt-in answerability scorer's; null when none ran")
    fallback_reason: str | None = Field(None, description="why a generated answer was replaced by the quoted one: "
                                        "unsupported, no citation, loop, repetition, truncated, title, empty or "
                                        "generator unavailable")
    handoff: HandoffOut = Field(description="whether a person should take over, and why")
    context: dict | None = Field(None, description="the customer context used: {\"used\": {field: {\"metadata\", "
                                 "\"use\", \"value\"}}, \"ignored\": [fields no rule maps]}; null without a customer")
    language: str = Field("en", description="the question's language (ISO 639-1), which the abstention is written "
                          "in; each citation's metadata carries its document's \"language\"")


class ErrorResponse(BaseModel):
    error: str
    detail: object | None = None


class CollectionCreate(BaseModel):
    model_config = STRICT
    name: str = Field(pattern=COLLECTION_NAME.pattern)
    encoder: Literal["multilingual"] | None = Field(None, description="multilingual: serve it with the multilingual "
                                                    "encoder even if its documents are all English (customers ask in "
                                                    "other languages); documents not all English get it anyway")


class CollectionOut(BaseModel):
    collection: str
    documents: int
    chunks: int
    generation: int
    index: str
    encoder: str | None
    hybrid_dense_weight: float = Field(0.5, description="the dense ranking's share in hybrid search, fitted by "
                                                        "`kbqa distill` on the teacher LLM's questions")
    languages: dict[str, int] = Field(default_factory=dict, description="documents by language (ISO 639-1)")
    question_languages: list[str] = Field(default_factory=list, description="the languages its customers ask in, "
                                          "which `kbqa distill` translates the teacher's questions into")


class FeedbackRequest(BaseModel):
    model_config = STRICT
    answer_id: str = Field(pattern="^[0-9a-f]{32}$")
    helpful: bool
    comment: str = Field("", max_length=4000)


class FeedbackCorrection(BaseModel):
    model_config = STRICT
    corrected_answer: str = Field(min_length=1, max_length=4000, description="the right answer, in the docs' words")


class FeedbackCreated(BaseModel):
    feedback_id: int


class FeedbackOut(BaseModel):
    feedback_id: int
    answer_id: str
    helpful: bool
    comment: str
    created: float
    collection: str
    question: str
    answer: str
    abstained: bool
    grounding: str
    citations: list[dict]


class UploadReport(BaseModel):
    collection: str
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    errors: dict[str, str] = Field(description="files refused, with the reason; their stored versions stay")
    chunks_embedded: int
    chunks_total: int
    seconds: float


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    title: str
    chunks: int
    metadata: dict = Field(default_factory=dict)


class ChunkOut(BaseModel):
    chunk_id: str
    heading: str
    position: int
    text: str


class DocumentDetail(BaseModel):
    doc_id: str
    source: str
    title: str
    metadata: dict
    chunks: list[ChunkOut]


class DocumentDeleted(BaseModel):
    removed: list[str] = Field(description="every document of the file (a JSONL file holds many)")
    file: str


class JobOut(BaseModel):
    job_id: str
    collection: str
    state: str = Field(description="queued | running | succeeded | failed")
    stage: str = Field(description="the step running now: teacher, mining, training, evaluating, promoting")
    submitted: float
    started: float | None
    finished: float | None
    report: dict | None = Field(description="kbqa distill --json's report, once finished")
    error: str | None


class KeyCreate(BaseModel):
    model_config = STRICT
    name: str = Field(min_length=1, max_length=200)
    scope: Literal["query", "admin"]
    collections: list[Annotated[str, Field(pattern=COLLECTION_NAME.pattern)]] = Field(
        default_factory=list, max_length=100, description="bind the key to these collections; empty: all")
    filter: MetadataFilter = None


class KeyCreated(BaseModel):
    key: str = Field(description="shown once: only its hash is stored")
    key_id: str


class KeyOut(BaseModel):
    key_id: str
    name: str
    scope: str
    collections: str | None
    created: float
    revoked: bool
    filter: dict | None = Field(None, description="the key's slice: AND-ed into every request it makes")


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_not_blank)]
    title: str = Field("", max_length=1000)
    text: str = Field(min_length=1)


class RecordsUpload(BaseModel):
    model_config = STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,100}$",
                      description="the records are stored as <name>.jsonl: posting the same name replaces them")
    records: list[RecordIn] = Field(min_length=1, max_length=10000)


class NearestDocument(BaseModel):
    doc_id: str
    title: str
    source: str
    score: float


class GapCluster(BaseModel):
    size: int = Field(description="questions in the cluster (a question asked twice counts twice)")
    representative: str = Field(description="the question nearest the cluster's centre")
    examples: list[str]
    reasons: dict[str, int] = Field(description="abstained / unhelpful counts")
    first_seen: float
    last_seen: float
    nearest_document: NearestDocument | None = Field(description="what retrieval finds now for the representative")
    answered_now: float | None = Field(None, description="share of its central questions answered now")
    covered: bool | None = Field(None, description="most of its questions are answered now: the gap was closed")
    customers: dict[str, dict[str, int]] = Field(default_factory=dict, description="the customer context its "
                                                 "questions came with: field -> value -> questions")


class GapReport(BaseModel):
    collection: str
    since_days: float
    questions: int
    clusters: list[GapCluster]
