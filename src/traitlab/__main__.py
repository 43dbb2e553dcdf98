import sys

from traitlab.cli import main

sys.exit(main())
