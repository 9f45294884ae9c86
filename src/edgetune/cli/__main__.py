import sys

from edgetune.cli.main import main

sys.exit(main())
