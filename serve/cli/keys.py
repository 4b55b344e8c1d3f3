"""`kbqa keys create | list | revoke`: API keys (only their hashes are stored)."""
from __future__ import annotations

import json
import sys


def cmd_keys(args) -> int:
    from retrieval.home import check_collection_name
    from serve.auth import KeyStore
    from serve.settings import Settings

    keys = KeyStore(Settings().kbqa_home.root / "keys.sqlite")
    if args.keys_command == "create":
        for name in args.collection or []:
            check_collection_name(name)
        key = keys.create(args.name, args.scope, args.collection, args.filter)
        print(key)
        print("Store it now: only its hash is kept.", file=sys.stderr)
    elif args.keys_command == "revoke":
        try:
            keys.revoke(args.key_id)
        except KeyError as exc:
            print(f"kbqa: {exc.args[0]}", file=sys.stderr)
            return 2
    else:
        rows = keys.list()
        if args.json:
            print(json.dumps(rows, indent=1))
        for r in rows if not args.json else []:
            sliced = f"  filter={json.dumps(r['filter'])}" if r["filter"] else ""
            print(f"{r['key_id']}  {r['name']}  {r['scope']}  collections={r['collections'] or '*'}{sliced}"
                  + ("  REVOKED" if r["revoked"] else ""))
    return 0


def filter_arg(text: str) -> dict:
    """--filter JSON: parsed and checked, so a typo fails the command rather than every request later."""
    import argparse

    from retrieval.filters import FilterError, compile_filter

    try:
        node = json.loads(text)
        compile_filter(node)
    except (json.JSONDecodeError, FilterError) as exc:
        raise argparse.ArgumentTypeError(f"not a filter: {exc}") from None
    return node


def register(sub) -> None:
    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    k = keys_sub.add_parser("create", help="create a key and print it (once)")
    k.add_argument("--name", required=True, help="who or what uses it")
    k.add_argument("--scope", choices=("query", "admin"), required=True)
    k.add_argument("--collection", action="append", help="bind the key to this collection (repeatable)")
    k.add_argument("--filter", type=filter_arg, help='bind the key to a slice of the documents: a metadata filter as '
                   'JSON, e.g. \'{"plan": "business"}\' (README "Filters"), AND-ed into every request it makes')
    k = keys_sub.add_parser("list", help="list keys (never the secrets)")
    k.add_argument("--json", action="store_true")
    k = keys_sub.add_parser("revoke", help="revoke a key by its id")
    k.add_argument("key_id")
    p.set_defaults(func=cmd_keys)
