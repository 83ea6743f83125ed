"""The package's shape is part of its contract: imports follow the flow, with no cycles, and the
CLI's help answers without importing torch.

Every import counts, module-level or inside a function (a lazy import is still an import). A
module may import modules of its own layer or of a layer listed before it, never after.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"

# Below the flow first (errors, files, config, process tuning), then the flow's stages in the
# order they use each other (docs/how-it-works.md says why checkpoint and sampling come before
# training: the trainer writes checkpoints and shows samples), then the public face.
LAYERS = [
    ["charrnn.errors"],
    ["charrnn.files"],
    ["charrnn.config"],
    ["charrnn.runtime", "charrnn"],  # the package root imports runtime.threads alone; its names load lazily
    ["charrnn.data"],
    ["charrnn.model"],
    ["charrnn.checkpoint"],
    ["charrnn.sampling"],
    ["charrnn.evaluate"],
    ["charrnn.training"],
    ["charrnn.export"],  # the formats a model is written in, which CharRNN.export offers
    ["charrnn.api", "charrnn.console", "charrnn.curves", "charrnn.notebook"],
    ["charrnn.cli", "charrnn.server", "charrnn.__main__"],
]


def modules() -> dict[str, Path]:
    found = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = p
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its code."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.split(".")[0] == "charrnn":
                out.add(t)
    return out


def layer(name: str) -> int:
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[0]


def test_imports_follow_the_flow():
    known = modules()
    upward = []
    for name, path in sorted(known.items()):
        for target in sorted(imports(name, path, known)):
            if layer(target) > layer(name):
                upward.append(f"{name} imports {target}")
    assert not upward, "imports against the flow:\n" + "\n".join(upward)


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_help_imports_no_torch():
    code = (
        "import sys\nfrom charrnn.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['sample', '--help']):\n"
        "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr
