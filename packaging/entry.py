"""The bundle's one executable: `skv-desktop` (the app) or `skv` (the CLI and server), by the name it is run as
(the bundle's `skv` is a symlink to `skv-desktop`)."""

import sys
from pathlib import Path


def main() -> int:
    name = Path(sys.argv[0]).name
    if name.startswith("skv") and not name.startswith("skv-desktop"):
        from engine.cli import main as cli_main

        return cli_main()
    from app.main import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())
