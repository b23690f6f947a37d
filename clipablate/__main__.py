import sys

from clipablate.cli import main

sys.exit(main())
