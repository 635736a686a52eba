"""``python -m rmail`` runs the CLI."""

import sys

from rmail.cli import main

sys.exit(main())
