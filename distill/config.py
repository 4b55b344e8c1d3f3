"""One distillation run's settings; saved as distill_config.json beside the student it produced."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class DistillConfig:
    epochs: int = 1
    max_epochs: int = 4            # small collections repeat their triples up to this many times to use the
                                   # example budget (covid: 1 epoch = 27 steps was too little: see README)
    batch_size: int = 16           # triples per step: 16 queries + 32 passages
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    max_examples: int = 1200       # caps the step count (~3.2 s/step on 2 cores): the 10-minute budget for kb/
    sentences_per_chunk: int = 1   # salient-sentence pseudo-queries per chunk, besides titles/headings/questions
    holdout_ratio: float = 0.1     # pseudo-queries kept out of training to decide promotion
    logged_holdout_ratio: float = 0.3   # customers' logged questions held out to decide promotion (when >= 50)
    negatives_from_rank: int = 2   # hard negatives are drawn from teacher ranks [from, to) among other documents
    negatives_to_rank: int = 12
    margin_weight: float = 1.0      # MarginMSE on teacher-scored triples
    contrastive_weight: float = 1.0  # in-batch contrastive on (pseudo-query, chunk, hard negative); MarginMSE
                                     # alone lowered held-out MRR@10 on kb/ from 0.454 to 0.388
    passage_max_tokens: int = 256
    replay_ratio: float = 0.5      # incremental runs: old chunks replayed per new chunk
    replay_min: int = 200
    full: bool = False             # ignore the current student and start over from `student`
    # The teacher LLM's synthetic questions (distill/teacher_questions.py), when a teacher is there: chunks are asked
    # in a seeded order until this much teacher time is spent (cached chunks are free, so each run goes further).
    # 15 minutes is 150-300 chunks a run at the 3-6 s a chunk measured here (README); `kbqa teacher-questions`
    # without a budget fills the rest beforehand.
    teacher_max_minutes: float | None = 15.0
    teacher_max_chunks: int | None = None
    # Their translations into the customers' languages (multilingual collections, distill/teacher_translations.py):
    # ~2.3 s a short question here, so 15 minutes is ~390 translations a run, more on later runs (cached).
    translate_max_minutes: float | None = 15.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
