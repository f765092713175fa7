import sys

from ocrd.cli import main

sys.exit(main())
