"""Machine-translate a sample of the dev sets' report-split questions with the teacher LLM (issue 29): the
cross-lingual retrieval benchmark asks them of the English knowledge bases.

    KBQA_HOME=.kbqa-bench python -m benchs.builders.translate_questions --data PATH/TO/shared/data

Writes ``benchs/data/translated-questions/<dataset>.jsonl`` (id, language, English question, translation) and
``back-translation.jsonl`` (the first ``--back`` translations of each language turned back into English, with their
token-F1 against the original: the check that a translation kept the question). With ``--kb-language es``, the
covid FAQ's documents that answer the sampled questions are translated too (``covid_faq_deepset-kb-es.jsonl``): a
knowledge base partly in Spanish, as a help center half-way through its localisation is. Every line is written as
soon as it is translated and existing lines are skipped, so a killed run resumes where it stopped. The teacher is
Qwen2.5-Coder-1.5B-Instruct (`kbqa prepare --teacher`) on llama.cpp's server: this is machine translation, and a
small model's; the figures that use it say so.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from tqdm.auto import tqdm

from benchs.common import REPO, dataset_files, is_answerable, load_questions, split_of
from retrieval.answering.engines.llama_server import llama_served
from retrieval.answering.engines.remote import RemoteGenerator
from distill.metrics import token_f1
from retrieval.model_store import verify
from retrieval.models import TEACHER_LLM, TEACHER_LLM_ALIAS, TEACHER_LLM_GGUF
from serve.settings import Settings

OUT = REPO / "benchs" / "data" / "translated-questions"
LANGUAGES = {"es": "Spanish", "de": "German", "fr": "French", "zh": "Simplified Chinese", "ja": "Japanese"}
PER_DATASET = {"emanualqa": 60, "covid_faq_deepset": 60, "techqa_dev": 30}
PROMPT = ("Translate the customer's message into {language}. Keep product names, codes and version numbers as they "
          "are. Reply with the translation only.")
DOC_PROMPT = ("Translate this help-center article into {language}. Keep product names, codes, numbers and links as "
              "they are. Reply with the translation only.")
KB_DATASET = "covid_faq_deepset"


def sampled_questions(data: Path, name: str, count: int) -> list[dict]:
    """``count`` answerable report-split questions with gold documents: the head of a fixed shuffle, so a larger
    count keeps the questions already translated."""
    _, questions_path = dataset_files(data, name)
    pool = [q for q in load_questions(questions_path)
            if split_of(q["id"]) == "report" and is_answerable(q) and q.get("gold_ids")]
    pool.sort(key=lambda q: q["id"])
    random.Random(0).shuffle(pool)
    return pool[:count]


def translate(teacher: RemoteGenerator, text: str, language: str) -> str:
    messages = [{"role": "system", "content": PROMPT.format(language=language)}, {"role": "user", "content": text}]
    return "".join(teacher.stream(messages)).strip()


def done_keys(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    return {(row["id"], row["language"]) for row in map(json.loads, path.read_text().splitlines())}


def append(path: Path, row: dict) -> None:
    with path.open("a") as out:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--back", type=int, default=20, help="back-translations per language (the quality check)")
    parser.add_argument("--kb-language", help="also translate the covid documents the sampled questions need")
    args = parser.parse_args()
    languages = args.languages.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    samples = {name: sampled_questions(args.data, name, count) for name, count in PER_DATASET.items()}
    # Language-major: a run stopped early leaves whole languages, each over all three sets.
    done = {name: done_keys(OUT / f"{name}.jsonl") for name in samples}
    todo = [(language, name, q) for language in languages for name, questions in samples.items() for q in questions
            if (q["id"], language) not in done[name]]
    back_path = OUT / "back-translation.jsonl"
    back_done = done_keys(back_path)
    back_todo = [(language, q) for language in languages for q in samples["covid_faq_deepset"][:args.back]
                 if (q["id"], language) not in back_done]
    folder = Settings().kbqa_home.models_dir / TEACHER_LLM
    verify(folder)
    with llama_served(folder / TEACHER_LLM_GGUF, n_ctx=4096, wait_s=300, alias=TEACHER_LLM_ALIAS) as url:
        teacher = RemoteGenerator(url, TEACHER_LLM_ALIAS, timeout_s=300, max_new_tokens=320)
        for language, name, q in tqdm(todo, desc="translating", unit="question"):
            start = time.perf_counter()
            text = translate(teacher, q["question"], LANGUAGES[language])
            append(OUT / f"{name}.jsonl", {"id": q["id"], "language": language, "question": q["question"],
                                           "translation": text, "seconds": round(time.perf_counter() - start, 2)})
        translated = {(row["id"], row["language"]): row["translation"]
                      for row in map(json.loads, (OUT / "covid_faq_deepset.jsonl").read_text().splitlines())}
        for language, q in tqdm(back_todo, desc="back-translating", unit="question"):
            source = translated.get((q["id"], language))
            if source is None:
                continue
            back = translate(teacher, source, "English")
            append(back_path, {"id": q["id"], "language": language, "question": q["question"], "back": back,
                               "token_f1": round(token_f1(back, q["question"]), 3)})
        if args.kb_language:
            translate_documents(teacher, args.data, samples[KB_DATASET], args.kb_language)
        teacher.close()


def translate_documents(teacher: RemoteGenerator, data: Path, questions: list[dict], language: str) -> None:
    """The gold documents of ``questions``, title and text translated, one JSON line each (kb.jsonl's fields)."""
    kb_path, _ = dataset_files(data, KB_DATASET)
    records = {row["id"]: row for row in map(json.loads, kb_path.read_text().splitlines())}
    out = OUT / f"{KB_DATASET}-kb-{language}.jsonl"
    done = {row["id"] for row in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    gold = sorted({g for q in questions for g in q["gold_ids"] if g in records} - done)
    teacher.max_new_tokens = 1400
    for doc_id in tqdm(gold, desc=f"translating documents ({language})", unit="document"):
        record, start = records[doc_id], time.perf_counter()
        messages = [{"role": "system", "content": DOC_PROMPT.format(language=LANGUAGES[language])},
                    {"role": "user", "content": f"{record['title']}\n\n{record['text']}"}]
        title, _, text = "".join(teacher.stream(messages)).strip().partition("\n")
        append(out, {**record, "title": title.strip(), "text": text.strip(), "language": language,
                     "seconds": round(time.perf_counter() - start, 2)})


if __name__ == "__main__":
    main()
