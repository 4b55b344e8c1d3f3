"""Answering: from a question and its retrieved passages to one complete, cited ``Answer`` (records.py).

- pipeline.py: ``AnswerPipeline``, the stages composed (rewrite, retrieve, gates, select, write, verify, cite,
  hand-off);
- the stages: followup.py (the standalone question), gates.py (relevance, answerability, knowledge gap),
  selection.py (answer units chosen from the passages), writing.py (the generator, with its fallback),
  verification.py (support, degeneration, citations), handoff.py (when a person should take over);
- the models they read: answerability.py (the cross-encoders), gap_detector.py, the selector (selection.py) and
  fitted.py (their JSON files), engines/ (the generator engines behind one Protocol), registry.py (which trained
  version serves);
- prompt.py: what every engine is shown and how its text is read back.
The HTTP service (serve/) wires these with the loaded models (serve/wiring.py); training (distill/) reads the same
parts.
"""
