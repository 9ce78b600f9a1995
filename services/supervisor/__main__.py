import sys

from skiff.supervisor.main import main

sys.exit(main())
