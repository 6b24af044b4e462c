"""`python -m modelmon` is the `modelmon` command."""

import sys

from .cli import main

sys.exit(main())
