"""``python -m qwen_embed`` runs the ``qwen-embed`` command line."""

import sys

from .cli import main

sys.exit(main())
