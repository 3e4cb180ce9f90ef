import sys

from cl_bench.cli import main

sys.exit(main())
