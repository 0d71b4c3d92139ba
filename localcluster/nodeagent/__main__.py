"""``python -m localcluster.nodeagent …``: see localcluster.nodeagent.cli."""

import sys

from localcluster.nodeagent.cli import main

sys.exit(main(sys.argv[1:]))
