import sys

from skiff.netsvc.server import main

sys.exit(main())
