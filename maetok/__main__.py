import sys

from maetok.cli import main

sys.exit(main())
