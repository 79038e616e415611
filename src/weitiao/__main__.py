import sys

from weitiao.cli import main

sys.exit(main())
