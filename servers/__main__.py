"""``python -m servers BACKEND ...``: run a server without the bench CLI."""

import sys

from servers.main import main

sys.exit(main())
