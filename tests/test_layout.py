"""The tree reads as the protocol: the core never imports the verifier, and no modules import each other in a
circle (checked on the source, every import statement, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "verifier")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that `name` imports (a `from pkg import x` counts as pkg.x when that is a module)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            targets = [str(node.args[0].value)]  # importlib.import_module("x") hides an import from linters
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_the_core_never_imports_the_verifier() -> None:
    bad = sorted((m, t) for m, ts in _graph().items() if m.startswith("registry") for t in ts
                 if t.startswith("verifier"))
    assert bad == []



def test_the_core_imports_only_the_core() -> None:
    """Hashing, Merkle, sampling, the claim type and the contract's interface are rules everything imports:
    they must not reach into the prover, the stores, the chain client, ZK or the CLI."""
    graph = _graph()
    assert {"registry.core.hashing", "registry.core.merkle", "registry.core.sampling", "registry.core.claims",
            "registry.core.errors"} <= set(graph)
    bad = sorted((m, t) for m, ts in graph.items() if m.startswith("registry.core") for t in ts
                 if not t.startswith("registry.core") and t != "registry")
    assert bad == []


def test_each_role_has_its_own_package() -> None:
    """The tree reads as the protocol: no protocol module is left loose at the top of `registry`."""
    loose = sorted(p.name for p in (ROOT / "registry").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    for role in ("core", "spec", "pol", "store", "chain", "zk", "cli", "devnet"):
        assert (ROOT / "registry" / role / "__init__.py").is_file(), role

def _parents(m: str) -> set[str]:
    parts = m.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_circle() -> None:
    graph = _graph()
    # importing a.b runs a/__init__ first; an edge from a package's own __init__ to its submodules is how a
    # package exposes them, not a circle, so edges into one's own ancestors are left out.
    edges = {m: {t for t in ts if t not in _parents(m)} for m, ts in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_circle() -> None:
    """The checker sees imports inside functions and through importlib (the old registry.cli <->
    registry.zk.cli circle went through importlib.import_module)."""
    known = {"a", "b"}
    assert _imports("a", _write("a", "from b import x\n"), known) == {"b"}
    assert _imports("b", _write("b", "def f():\n    import a\n"), known) == {"a"}
    assert _imports("b", _write("b", "import importlib\nimportlib.import_module('a')\n"), known) == {"a"}


def _write(name: str, text: str) -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp())
    p = d / f"{name}.py"
    p.write_text(text)
    return p
