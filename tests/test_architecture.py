"""The tree shows the architecture and keeps its rules (docs/architecture.md), read from the
package's own imports with ast: arrows point one way, the model imports nothing above it, the
demo uses the public API only, the CLI is a table of commands, and the doc's map is the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import git_scratch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "git_scratch"

# A room may import from its own room and from rooms of a lower rank, never from a higher one.
# The package's __init__ (the public API) sits above the library and below the two apps.
RANKS = {
    "atomic": 0, "config": 0,
    "model": 1,
    "accel": 2, "generation": 2,
    "checkpoints": 3, "data": 3,
    "tools": 4, "training": 4, "evaluation": 4, "export": 4, "explore": 4,
    "__init__": 5,
    "demo": 6,
    "cli": 7,
}
# The model's conveniences users expect (GIT.from_pretrained, GIT.generate, ...): one-line
# delegations whose import of the room above is inside the method, visibly lazy.
DELEGATIONS = {"from_pretrained", "save_pretrained", "generate", "answer", "classify"}
COMMANDS = ["caption", "vqa", "convert", "info", "demo", "train", "eval", "mask", "parity", "attention", "init",
            "manifest", "export", "explore"]


def module_name(path: Path) -> str:
    """git_scratch/model/git.py -> git_scratch.model.git; a package's __init__ is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str) -> list[tuple[str, str, int]]:
    """(imported git_scratch module or name's module, enclosing function or "", line) per import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "git_scratch":
                for alias in node.names:  # `from . import accel` names a module, not a value
                    target = f"{base}.{alias.name}"
                    found.append((target if target in MODULES else base, function, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, function, node.lineno) for a in node.names if a.name.split(".")[0] == "git_scratch")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_the_rooms_exist() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert rooms == {r for r in RANKS if r not in ("atomic", "config", "__init__")}
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "atomic.py", "config.py"}
    assert not (ROOT / "git_scratch").exists()  # src layout: see test_a_folder_named_git_scratch_hides_nothing


def test_model_imports_nothing_above_it() -> None:
    problems = []
    for module in (m for m in MODULES if room(m) == "model"):
        for target, function, line in imports(module):
            if room(target) in ("model", "config"):
                continue
            if module == "git_scratch.model.git" and function in DELEGATIONS:
                continue
            problems.append(f"{module}:{line} imports {target}")
    assert problems == []


def test_the_delegations_are_one_line() -> None:
    """Each convenience is a docstring, the lazy import and one call: no logic hides above the model."""
    tree = ast.parse(MODULES["git_scratch.model.git"].read_text(encoding="utf-8"))
    git = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GIT")
    for method in (n for n in git.body if isinstance(n, ast.FunctionDef) and n.name in DELEGATIONS):
        body = method.body[1:] if isinstance(method.body[0], ast.Expr) else method.body  # past the docstring
        assert [type(n) for n in body] in ([ast.ImportFrom, ast.Return], [ast.ImportFrom, ast.Expr]), method.name


def test_imports_point_down_and_never_cycle() -> None:
    problems, graph = [], {}
    for module in MODULES:
        graph[module] = set()
        for target, function, line in imports(module):
            if module == "git_scratch.model.git" and function in DELEGATIONS:
                continue  # checked above: the model's conveniences, by design
            if RANKS[room(target)] > RANKS[room(module)]:
                problems.append(f"{module}:{line} imports {target}, a room above it")
            if not function:
                graph[module].add(target)
    assert problems == []
    visiting, done = [], set()

    def walk(module: str) -> None:
        if module in visiting:
            raise AssertionError("import cycle: " + " -> ".join(visiting[visiting.index(module):] + [module]))
        if module in done or module not in graph:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            walk(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        walk(module)


def test_demo_imports_the_public_api_only() -> None:
    for module in (m for m in MODULES if room(m) == "demo"):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level):
            if (node.module or "").startswith("git_scratch"):
                assert node.module == "git_scratch", f"{module} imports {node.module}"
                assert {a.name for a in node.names} <= set(git_scratch.__all__), module


def test_no_kernel_choice_inside_the_model() -> None:
    """The model calls its layers as `layer(x)`: nothing in it names the accel kernels."""
    for module in (m for m in MODULES if room(m) == "model"):
        text = MODULES[module].read_text(encoding="utf-8")
        assert not re.search(r"(?i:onednn|mkldnn)|linear_weights|(?<![.\w])linear\(", text), module


def test_the_cli_is_a_table_of_commands() -> None:
    from git_scratch.cli.__main__ import COMMANDS as table
    from git_scratch.cli.__main__ import build_parser

    assert list(table) == COMMANDS  # the same commands, in the same order, as before the reshape
    helpers = {"git_scratch.cli", "git_scratch.cli.__main__", "git_scratch.cli.common"}
    command_modules = {m for m in MODULES if room(m) == "cli"} - helpers
    assert command_modules == {module.__name__ for module in table.values()}
    for module in table.values():
        assert callable(module.add_args) and module.run.__doc__, module.__name__
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(subparsers.choices) == COMMANDS


def test_long_files_say_why() -> None:
    """A file over 400 lines states the reason at its top (its docstring says 'over 400 lines')."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    long = [p for p in files if len(p.read_text(encoding="utf-8").splitlines()) > 400]
    for path in long:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert "over 400 lines" in doc, f"{path.relative_to(ROOT)} is long and does not say why"


def test_architecture_doc_opens_with_the_tree_and_names_real_files() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = doc.split("```")[1]  # the first code block is the tree
    assert doc.index("```") < doc.index("\n## "), "the tree comes first"
    rooms_in_tree = set(re.findall(r"^  (\w+)/", tree, re.MULTILINE))
    assert rooms_in_tree == {r for r in RANKS if r not in ("atomic", "config", "__init__")}
    named = set(re.findall(r"git_scratch/[\w/]+\.py", doc))
    named |= {f"git_scratch/{r}/{f}" for r, files in re.findall(r"^  (\w+)/ +(.*)$", tree, re.MULTILINE)
              for f in re.findall(r"[\w]+\.py", files)}
    missing = sorted(p for p in named if not (PACKAGE.parent / p).is_file())
    assert named and missing == []
    every_module = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert every_module - named == set(), "the module map leaves files out"
