import sys

from traitlab.cli.main import main

sys.exit(main())
