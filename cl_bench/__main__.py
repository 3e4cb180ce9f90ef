from cl_bench.cli import main
import sys
sys.exit(main())
