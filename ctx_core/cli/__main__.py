import sys

from ctx_core.cli.main import main

sys.exit(main())
