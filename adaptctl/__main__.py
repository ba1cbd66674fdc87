import sys

from adaptctl.cli import main

sys.exit(main())
