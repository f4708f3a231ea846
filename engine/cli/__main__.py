"""`python -m engine.cli`: the console script `billing-engine`."""

import sys

from engine.cli.main import main

sys.exit(main())
