"""What kbqa itself says to a customer, in the customer's language (issue 29): the abstention and the "Sources" label.

The question's language (ingest/language.py) picks the text; a language without one here gets English. The English
abstention stays the exact text the generator was trained to write (retrieval/answering/prompt.py).
"""
from __future__ import annotations

from retrieval.answering.prompt import ABSTENTION

ABSTENTIONS = {
    "en": ABSTENTION,
    "es": "No lo sé según la documentación.",
    "de": "Das kann ich anhand der Dokumentation nicht beantworten.",
    "fr": "Je ne sais pas d'après la documentation.",
    "pt": "Não sei com base na documentação.",
    "it": "Non lo so in base alla documentazione.",
    "nl": "Dat weet ik niet op basis van de documentatie.",
    "zh": "根据文档，我不知道答案。",
    "ja": "ドキュメントからは分かりません。",
}
SOURCES = {"en": "Sources", "es": "Fuentes", "de": "Quellen", "fr": "Sources", "pt": "Fontes", "it": "Fonti",
           "nl": "Bronnen", "zh": "来源", "ja": "出典"}
LANGUAGES = tuple(ABSTENTIONS)


def abstention(language: str) -> str:
    return ABSTENTIONS.get(language, ABSTENTION)


def sources_label(language: str) -> str:
    return SOURCES.get(language, SOURCES["en"])
