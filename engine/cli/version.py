"""`skv version` (and `skv --version`)."""

from __future__ import annotations

import argparse

from engine import __version__
from engine.versions import native_versions


def cmd_version(args: argparse.Namespace) -> int:
    v = native_versions()
    print(f"sentencekv-desktop {__version__}")
    print(f"llama.cpp {v['llama_cpp']} (llama-cpp-python {v['llama_cpp_python']})")
    print(f"native patch {v['native_patch']}")
    from engine.models import BUILTIN_MODELS, DEFAULT_MODEL

    m = BUILTIN_MODELS[DEFAULT_MODEL]
    print(f"default model {m.title} ({m.licence}; {'installed' if m.installed() else 'not installed'})")
    if args.verbose and "system_info" in v:
        print(f"llama.cpp system info: {v['system_info']}")
    return 0


def add_version_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the app, llama-cpp-python and native patch versions")
    p.add_argument("--verbose", action="store_true", help="also print llama.cpp's system info")
