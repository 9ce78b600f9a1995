"""graphsvc: the image graph (images, layers) and the GraphDB (containers, names, links)."""

import sys

# sqlite-utils (the GraphDB) maps numpy and pandas types when it can import them; the GraphDB
# stores none, and numpy alone adds ~12 MB to the engine (it is in the venv for the bench's
# chart). Marked missing before any graphsvc module imports sqlite-utils.
for _optional in ("numpy", "pandas"):
    sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]
