"""`kbqa serve`: the HTTP API."""
from __future__ import annotations

import sys


def cmd_serve(args) -> int:
    import uvicorn

    from serve.app import create_app
    from serve.auth import KeyStore, is_loopback
    from serve.settings import Settings

    settings = Settings()
    host = args.host or settings.host
    if not is_loopback(host) and not KeyStore(settings.kbqa_home.root / "keys.sqlite").any_active():
        print(f"kbqa: refusing to listen on {host} with no API keys: create one with `kbqa keys create`, "
              "or serve on 127.0.0.1", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=host, port=args.port or settings.port)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)
