import sys

from fastsmooth.cli import main

sys.exit(main())
