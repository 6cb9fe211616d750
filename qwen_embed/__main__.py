"""``python -m qwen_embed`` runs the ``qwen-embed`` command line."""

import sys

from .interfaces.cli import main

sys.exit(main())
