"""The seams: no import cycle among app modules (module- and function-level imports alike), no FastAPI in
app/engine, the view registry is a leaf, nothing reads the environment at import time, nothing registers on import.

Check by hand: `.venv/bin/python -m tests.test_architecture` prints the cycles (none) and the import graph size."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "app").rglob("*.py"))}


def with_packages(target: str, importer: str, known: set[str]) -> set[str]:
    """`target` plus every package `__init__` that importing it runs: its ancestors that have an `__init__`, except
    the importer's own (already running when the importer runs). `from app.engine.decoders import gemma2` runs
    `app/engine/decoders/__init__.py` first, so a cycle through that `__init__` is a cycle."""
    own = importer.split(".")
    parts = target.split(".")
    out = {target}
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in known and own[:i] != parts[:i]:
            out.add(pkg)
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """App modules a module imports anywhere in its body (top level, functions, TYPE_CHECKING blocks), with the
    package `__init__`s those imports run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str | None] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "app" or a.name.startswith("app."):
                    found.add(resolve(a.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == "app" or mod.startswith("app.")):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in known else resolve(mod))
    out: set[str] = set()
    for target in found:
        if target is not None:
            out |= with_packages(target, name, known)
    out.discard(name)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = app_modules(root)
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """generation -> decoders/__init__ -> generation, the generation imports `gemma2` only (issue 30, item 5)."""
    root = plant(tmp_path, {
        "app/__init__.py": "",
        "app/engine/generation.py": "def pick():\n    from app.engine.decoders import gemma2\n    return gemma2\n",
        "app/engine/decoders/__init__.py": "from app.engine.generation import pick\n",
        "app/engine/decoders/gemma2.py": "from app.engine.decoders.common import x\n",
        "app/engine/decoders/common.py": "x = 1\n",
        "app/web/pages.py": "import app.engine.decoders.gemma2\n",
    })
    graph = import_graph(root)
    assert graph["app.engine.generation"] == {"app.engine.decoders", "app.engine.decoders.gemma2"}
    # a submodule importing a sibling does not run its own package's __init__ again; an outsider does run it
    assert graph["app.engine.decoders.gemma2"] == {"app.engine.decoders.common"}
    assert graph["app.web.pages"] == {"app.engine.decoders", "app.engine.decoders.gemma2"}
    assert cycles(graph) == [["app.engine.decoders", "app.engine.generation"]]
    (root / "app/engine/decoders/__init__.py").write_text('"""docs only"""\n', encoding="utf-8")
    assert cycles(import_graph(root)) == []


def test_no_import_cycles_among_app_modules():
    graph = import_graph()
    assert len(graph) > 40 and "app.main" in graph
    assert cycles(graph) == []


def test_engine_has_no_web_framework_imports():
    for name, path in app_modules().items():
        if name.startswith("app.engine"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            bad = {m for m in mods if m.split(".")[0] in ("fastapi", "starlette", "jinja2")
                   or m.startswith(("app.api", "app.web", "app.main", "app.core.registration"))}
            assert not bad, f"{name} imports {bad}"


def test_engine_imports_only_the_engine():
    """Arrows run downward: the engine is the bottom layer (no app.training, app.api, app.web, app.store, ...)."""
    upward = {name: sorted(m for m in deps if not m.startswith("app.engine"))
              for name, deps in import_graph().items() if name.startswith("app.engine")}
    assert {name: deps for name, deps in upward.items() if deps} == {}


def test_view_registry_is_a_leaf():
    graph = import_graph()
    assert graph["app.explorations.registry"] == set()
    assert graph["app.api.limits"] <= {"app.api.errors"} and graph["app.api.streams"] == set()
    assert not any(m.startswith(("app.api", "app.web", "app.core.registration")) for m in graph["app.engine.engine"])


def test_only_create_app_reads_the_environment():
    """No module calls get_settings() except app.main (inside create_app) and the CLI."""
    for name, path in app_modules().items():
        if name in ("app.main", "app.__main__", "app.core.settings") or name.startswith("app.training"):
            continue
        assert "get_settings(" not in path.read_text(encoding="utf-8"), name


def test_registration_happens_in_one_block():
    """No module outside app.core.registration registers a view or a Jinja filter/global."""
    for name, path in app_modules().items():
        if name in ("app.core.registration", "app.explorations.registry", "app.web.templating"):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in (".register(", "register_view(", "env.filters[", "env.globals[", "filters.setdefault", "globals.setdefault"):
            assert needle not in text, f"{name} registers something ({needle})"



MAX_MODULE_LINES = 300  # issue 11: no module in app/ over 300 lines; split along the module's seams instead


def test_no_app_module_is_too_long():
    long = {name: n for name, path in app_modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them into a package, re-exporting): {long}"


if __name__ == "__main__":
    g = import_graph()
    found = cycles(g)
    print(f"{len(g)} app modules, {sum(len(v) for v in g.values())} import edges, cycles: {found or 'none'}")
    sys.exit(1 if found else 0)
