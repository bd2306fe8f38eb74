"""``python -m neurocast.clients.cli``."""

import sys

from neurocast.clients.cli.main import main

sys.exit(main())
