#!@PYTHON@ -IS
# skiff's command-line launcher (written into the virtualenv by `make setup`).
# It starts Python without site (-I -S: no site-packages scan, no editable-install
# hooks) and tries the lean client first (cli/lean/skiff_lean.py: `run` over the unix
# socket without grpcio or protobuf); anything else goes to the full CLI, for which
# site is loaded now. Without this launcher, the console script runs the full CLI.
import os
import sys

sys.path.insert(0, "@LEAN@")
import skiff_lean  # noqa: E402

code = skiff_lean.main(sys.argv[1:], os.environ)
if code is None:
    del sys.path[0]
    import site

    site.main()
    from skiff.cli.main import main

    code = main()
sys.exit(code)
