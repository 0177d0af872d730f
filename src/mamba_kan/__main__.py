import sys

from mamba_kan.cli import main

sys.exit(main())
