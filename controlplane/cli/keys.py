"""`controlplane keys create|list|revoke`: the HTTP API's bearer keys. The key file keeps SHA-256 hashes only;
a new key is printed once, at creation."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from controlplane.cli._arg_types import positive_number, valid_name
from controlplane.cli._codes import EXIT_OK


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list or revoke API keys of the router's HTTP API")
    keys.add_argument("--keys-file", default=None,
                      help="the key file (default: $CONTROLPLANE_API_KEYS_FILE, else ~/.controlplane/api_keys.json)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; it is printed once")
    create.add_argument("name", type=valid_name,
                        help="the key's name; also the agent id of its calls unless --agent is given")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--mission", type=valid_name, help="the key acts in this mission only")
    scope.add_argument("--team", type=valid_name,
                       help="the key acts as the team, and in any mission `<team>/<anything>`")
    create.add_argument("--agent", type=valid_name, action="append", default=None,
                        help="an agent id the key may act as (x-agent-id); repeat it; default: any")
    create.add_argument("--rpm", type=positive_number("600"), default=None,
                        help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=positive_number("100000"), default=None,
                        help="tokens per minute (default: unlimited)")
    create.add_argument("--priority", choices=("normal", "bulk"), default="normal", help="the highest priority")
    create.add_argument("--expires-in-s", type=positive_number("86400"), default=None,
                        help="seconds until it expires (default never)")
    listing = actions.add_parser("list", help="every key, without secrets")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    revoke = actions.add_parser("revoke", help="revoke a key at once (a running router sees it on its next call)")
    revoke.add_argument("key_id", help="the key's id, from `keys list`")


def keys_command(args: argparse.Namespace) -> int:
    from serving._keys import ApiKeyStore

    store, now_s = ApiKeyStore(args.keys_file), time.time()
    if args.action == "create":
        clear_key, scope = store.create(
            args.name, kind="mission" if args.mission else "team", scope_id=args.mission or args.team, now_s=now_s,
            agents=args.agent, rpm=args.rpm, tpm=args.tpm, priority_ceiling=args.priority,
            expires_at_s=None if args.expires_in_s is None else now_s + args.expires_in_s)
        print(f"{clear_key}\n(shown once: store it now; the key file {store.path} keeps only its hash)")
        print(_describe(scope.model_dump(), now_s))
    elif args.action == "list":
        scopes = [scope.model_dump() for scope in store.list()]
        print(json.dumps(scopes, indent=2) if args.json else "\n".join(_describe(s, now_s) for s in scopes)
              or f"no keys in {store.path}")
    else:
        print(_describe(store.revoke(args.key_id, now_s=now_s).model_dump(), now_s))
    return EXIT_OK


def _describe(scope: dict[str, Any], now_s: float) -> str:
    if scope["revoked_at_s"] is not None:
        state = "revoked"
    elif scope["expires_at_s"] is not None and now_s >= scope["expires_at_s"]:
        state = "expired"
    else:
        state = "active"
    limits = ", ".join(f"{name} {scope[name]:g}" for name in ("rpm", "tpm") if scope[name] is not None)
    return (f"{scope['id']}  {scope['name']}  {state}  {scope['kind']} {scope['scope_id']}  "
            f"agents {', '.join(scope['agents']) if scope['agents'] else 'any'}  priority <= "
            f"{scope['priority_ceiling']}{'  ' + limits if limits else ''}")
