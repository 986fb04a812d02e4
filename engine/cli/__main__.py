"""`python -m engine.cli` runs `skv`."""

import sys

from engine.cli import main

sys.exit(main())
