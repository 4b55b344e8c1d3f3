"""`kbqa ingest`, `search`, `ask`, `status`, `customer-rules`: a collection's documents and questions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from serve.cli.common import service
from serve.cli.keys import filter_arg


def cmd_ingest(args) -> int:
    report = service(with_generator=False).ingest(Path(args.path), args.collection, show_progress=not args.json,
                                                  path_rule=args.path_metadata, encoder=args.encoder)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"collection {report.collection}: {len(report.added)} added, {len(report.changed)} changed, "
              f"{len(report.removed)} removed, {len(report.unchanged)} unchanged; "
              f"{report.chunks_embedded} chunks embedded, {report.chunks_total} in total ({report.seconds:.1f} s)")
        for source, reason in sorted(report.errors.items()):
            print(f"  skipped {source}: {reason}", file=sys.stderr)
    return 0


def cmd_search(args) -> int:
    from serve.service import hit_to_dict

    hits = service(with_generator=False).search(args.query, args.k, args.collection, args.filter)
    results = [hit_to_dict(h) for h in hits]
    if args.json:
        print(json.dumps({"query": args.query, "results": results}, indent=1))
    else:
        for rank, r in enumerate(results, start=1):
            snippet = " ".join(r["text"].split())[:160]
            print(f"{rank}. [{r['score']:.4f}] {r['source']} - {r['title']}\n   {snippet}")
    return 0


def customer_arg(text: str) -> dict:
    """--customer JSON: the API's customer object, checked the same way."""
    import argparse

    from pydantic import ValidationError

    from serve.schemas import CustomerIn

    try:
        return CustomerIn.model_validate_json(text).sent()
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"not a customer: {exc.errors()[0]['msg']} at "
                                         f"{'.'.join(map(str, exc.errors()[0]['loc'])) or 'top'}") from None


def rules_arg(text: str) -> dict:
    import argparse

    from serve.customer import RulesError, check_rules

    try:
        return check_rules(json.loads(text))
    except (json.JSONDecodeError, RulesError) as exc:
        raise argparse.ArgumentTypeError(f"not customer rules: {exc}") from None


def cmd_ask(args) -> int:
    answer = service(with_generator=True).ask(args.question, args.k, args.collection, filter=args.filter,
                                              customer=args.customer)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=1))
    else:
        print(f"Q: {answer.question}\nA: {answer.answer}")
        for c in answer.citations:
            print(f"   [{c.n}] {c.source} - {c.title}")
        if answer.context:
            used = ", ".join(f"{name} {u['value']} ({u['use']})" for name, u in answer.context["used"].items())
            print(f"   customer context: {used or 'none used'}" + (
                f"; ignored {', '.join(answer.context['ignored'])}" if answer.context["ignored"] else ""))
        gate = f"; answerability {answer.answerability:.2f}" if answer.answerability is not None else ""
        print(f"   ({answer.timings_ms.get('total', 0) / 1000:.1f} s{gate})")
    return 0


def cmd_customer_rules(args) -> int:
    collection = service(with_generator=False).collection(args.collection)
    if args.set is not None:
        collection.set_customer_rules(args.set)
    rules = collection.customer_rules
    if args.json:
        print(json.dumps({"collection": args.collection, "rules": rules}, indent=1))
    elif not rules:
        print(f"collection {args.collection}: no customer rules (a request's customer context is ignored)")
    else:
        print(f"collection {args.collection}: customer rules")
        for name, rule in sorted(rules.items()):
            print(f"  customer {name} -> metadata {rule['metadata']} ({rule['use']})")
    return 0


def cmd_status(args) -> int:
    from distill.run import freshness

    running = service(with_generator=False)
    names = [args.collection] if args.collection else running.collection_names()
    rows = [freshness(running.collection(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=1))
    for row in rows if not args.json else []:
        print(f"{row['collection']}: {row['chunks']} chunks, {row['chunks_newer_than_encoder']} "
              f"({row['share_newer']:.0%}) newer than the serving encoder {row['encoder']}; "
              f"hybrid search weighs dense {row['hybrid_dense_weight']:.2f}, "
              f"BM25 {1 - row['hybrid_dense_weight']:.2f}; "
              f"documents by language {row['languages']}; customers ask in {', '.join(row['question_languages'])}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ingest", help="ingest (or re-ingest, incrementally) a folder or file")
    p.add_argument("path")
    p.add_argument("--collection", default="default")
    p.add_argument("--path-metadata", metavar="RULE", help="metadata from each file's folders, e.g. "
                   "'{product}/{version}' reads tv/3.2/setup.md as product tv, version 3.2; kept for the next "
                   "ingests of the collection ('' drops it)")
    p.add_argument("--encoder", choices=("multilingual",), help="serve the collection with the multilingual encoder "
                   "even if its documents are all English (customers who ask in other languages); a collection whose "
                   "documents are not all English gets it without asking")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="retrieve passages")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--collection", default="default")
    p.add_argument("--filter", type=filter_arg, help='only documents whose metadata this JSON filter keeps, e.g. '
                   '\'{"product": "tv"}\' (README "Filters")')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer a question with citations")
    p.add_argument("question")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--collection", default="default")
    p.add_argument("--filter", type=filter_arg, help="only documents whose metadata this JSON filter keeps")
    p.add_argument("--customer", type=customer_arg, help='who is asking, e.g. \'{"product": "tv", "plan": '
                   '"business"}\': scoped by the collection\'s customer rules')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("customer-rules", help="show or set how a customer's context scopes a collection")
    p.add_argument("--collection", default="default")
    p.add_argument("--set", type=rules_arg, metavar="JSON", help='replace them, e.g. \'{"product": {"metadata": '
                   '"product", "use": "filter"}, "plan": {"metadata": "plans", "use": "prefer"}}\'; \'{}\' clears')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_customer_rules)

    p = sub.add_parser("status", help="collections and how much of each is newer than its encoder")
    p.add_argument("--collection")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
