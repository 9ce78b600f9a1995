"""Generate the Python code for skiff's protos, or check that it is current.

    python protos/generate.py gen   [OUT]   # default OUT: build/gen
    python protos/generate.py check [OUT]   # exit 1 if OUT differs from a fresh generation

The generated modules import each other as ``skiff.<area>.v1``; OUT is mapped to
those packages by pyproject.toml.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AREAS = ("types", "api", "graph", "exec", "net")


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for area in AREAS:
        pkg = out / "skiff" / area / "v1"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").touch()
        (pkg.parent / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b)
    found = [f"{a / n}: only in one tree" for n in cmp.left_only + cmp.right_only if n != "__pycache__"]
    found += [f"{a / n}: differs" for n in cmp.diff_files]
    for name in cmp.common_dirs:
        if name != "__pycache__":
            found += differences(a / name, b / name)
    return found


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("gen", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "build" / "gen"
    if argv[0] == "gen":
        generate(out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if not out.exists():
            print(f"{out} does not exist: run `make protos`", file=sys.stderr)
            return 1
        diff = differences(out / "skiff", Path(tmp) / "skiff")
    for line in diff:
        print(line, file=sys.stderr)
    if diff:
        print("generated code is out of date: run `make protos`", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
