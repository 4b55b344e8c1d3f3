"""Where the trained generation parts live under $KBQA_HOME/models, and which one serves.

Training (distill/) writes versioned folders here (retrieval/model_store.py); serving only reads them. The shipped
adapter and sentence scorer are package data beside this module, which `kbqa prepare` (retrieval/prepare.py) installs
into the models folder, so a request never reads package data of the training code.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.model_store import current_version
from retrieval.models import SHIPPED_ADAPTER, SHIPPED_SENTENCE_SCORER

ADAPTERS = "generator-adapters"          # vNNNN folders written by `kbqa train-generator`
ANSWERABILITY = "answerability"          # vNNNN folders written by `kbqa train-answerability`
SENTENCE_SCORERS = "sentence-scorer"     # vNNNN folders written by `python -m distill.selector_train --train-scorer`
# The adapter kbqa ships (measured in the README); prepare copies it into the models folder.
SHIPPED_ADAPTER_SOURCE = Path(__file__).resolve().parent / "shipped-adapter"
# The answer-sentence scorer kbqa ships (MiniLM cross-encoder, fp16; README); prepare installs it too.
SHIPPED_SENTENCE_SCORER_SOURCE = Path(__file__).resolve().parent / "shipped-sentence-scorer"


def current_adapter(models_dir: Path) -> Path | None:
    """The adapter `kbqa train-generator --activate` made current, if any."""
    return current_version(Path(models_dir) / ADAPTERS)


def current_scorer(models_dir: Path) -> Path | None:
    """The scorer `kbqa train-answerability --activate` made current, if any."""
    return current_version(Path(models_dir) / ANSWERABILITY)


def shipped_adapter(models_dir: Path) -> Path | None:
    """The shipped adapter as `kbqa prepare` installed it, if it did."""
    folder = Path(models_dir) / SHIPPED_ADAPTER
    return folder if folder.is_dir() else None


def _resolve_folder(choice: str, what: str, auto) -> Path | None:
    """A setting that is `none`, `auto` (whatever ``auto()`` finds) or a folder that must exist."""
    if choice == "none":
        return None
    if choice == "auto":
        return auto()
    if not Path(choice).is_dir():
        raise FileNotFoundError(f"{what} {choice} does not exist")
    return Path(choice)


def resolve_adapter(choice: str, models_dir: Path) -> Path | None:
    """Which fine-tuned generator adapter to load (see Settings.generator_adapter)."""
    return _resolve_folder(choice, "generator adapter",
                           lambda: current_adapter(models_dir) or shipped_adapter(models_dir))


def resolve_scorer(choice: str, models_dir: Path) -> Path | None:
    """Which answerability scorer to load, if any (see Settings.answerability_scorer)."""
    return _resolve_folder(choice, "answerability scorer", lambda: current_scorer(models_dir))


def resolve_sentence_scorer(choice: str, models_dir: Path) -> Path | None:
    """Which answer-sentence scorer to load (see Settings.sentence_scorer): a newer trained one made current, else
    the shipped one as `kbqa prepare` installed it."""
    def auto() -> Path | None:
        installed = Path(models_dir) / SHIPPED_SENTENCE_SCORER
        return current_version(Path(models_dir) / SENTENCE_SCORERS) or (installed if installed.is_dir() else None)
    return _resolve_folder(choice, "sentence scorer", auto)
