"""`skv cache`: saved document sessions."""

from __future__ import annotations

import argparse


def cmd_cache(args: argparse.Namespace) -> int:
    from engine.session_store import SessionStore

    store = SessionStore()
    if args.cache_command == "clear":
        n, freed = store.clear()
        print(f"removed {n} saved document sessions ({freed / 2**20:.1f} MiB) from {store.root}")
        return 0
    entries = store.entries()
    for e in entries:
        print(
            f"{e.key[:12]}  {e.size_bytes / 2**20:8.1f} MiB  {e.n_doc_tokens:7d} tok  n_ctx {e.n_ctx:6d}  "
            f"{e.model}  {', '.join(e.documents)}"
        )
    print(
        f"{len(entries)} saved document sessions, {store.total_bytes() / 2**20:.1f} MiB of "
        f"{store.max_bytes / 2**20:.0f} MiB in {store.root}"
    )
    return 0


def add_cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="saved document sessions: list or clear")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=type(p))
    csub.required = True
    csub.add_parser("list", help="list saved document sessions (most recently used first)")
    csub.add_parser("clear", help="delete every saved document session")
