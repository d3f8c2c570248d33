import sys

from tokenbounds.cli import main

sys.exit(main())
