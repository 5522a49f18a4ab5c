"""The packages depend one way, read from the code's own imports (ast, nothing imported):
sid_index (data, index, decoding, errors, atomic writes) <- trainer (checkpoints) <- server (and its HTTP contract,
server.api / server.client) <- loadtest <- radgr.

An import inside a function is allowed only in a command-line module (so that `--help` and the light
commands start without torch or vLLM) or where the list below says why."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"sid_index": 0, "trainer": 1, "server": 2, "loadtest": 3, "radgr": 4}
LAZY_OK = {  # (module, imported module): why it is imported where it is used
    ("server.lifecycle", "server.native_engine"): "the engine chosen is imported, not both",
    ("server.lifecycle", "server.vllm_engine"): "importing vLLM costs seconds; the native engine does without",
    ("sid_index.index", "sid_index.constraint"): "torch, which only the decoders need",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, whether the import sits inside a function) for every import of the file."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.split(".")[0] in LAYERS)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module.split(".")[0] in LAYERS:
                    found.append((child.module, in_function))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text()), False)
    return found


def sources() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py"))


def test_packages_import_only_the_layers_below():
    upward = []
    for path in sources():
        mine = module_name(path)
        for target, _ in project_imports(path):
            package, own = target.split(".")[0], mine.split(".")[0]
            if package != own and LAYERS[package] >= LAYERS[own]:
                upward.append(f"{mine} imports {target}")
    assert upward == []


def test_no_import_hides_inside_a_function_without_a_reason():
    hidden = []
    for path in sources():
        mine = module_name(path)
        if path.name == "cli.py":
            continue
        for target, inside in project_imports(path):
            if inside and target != mine and (mine, target) not in LAZY_OK:
                hidden.append(f"{mine} imports {target} inside a function")
    assert hidden == []


def test_the_checker_sees_imports_at_every_depth(tmp_path):
    """The reader itself: a nested function's import and a class body's import are both found."""
    src = tmp_path / "m.py"
    src.write_text("import trainer.loop\nclass A:\n    from server import app\n"
                   "def f():\n    def g():\n        from sid_index.index import load_index\n")
    assert project_imports(src) == [("trainer.loop", False), ("server", False), ("sid_index.index", True)]


def test_the_command_line_starts_without_torch():
    """`radgr --help`, `radgr query`, `radgr data ...` must not pay for torch: the options are built from
    torch-free config classes (trainer/config.py), and torch comes in only when a command runs."""
    import subprocess
    import sys

    code = "import sys, radgr.cli; print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
