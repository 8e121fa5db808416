import sys

from commonpool.cli import main

sys.exit(main())
