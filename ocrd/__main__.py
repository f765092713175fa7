import sys

from ocrd.cli.main import main

sys.exit(main())
