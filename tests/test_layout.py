"""The package layout: capabilities in folders, no import cycles, a light command line, a wheel that carries the
card."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "salient_imagenet_builder"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Package modules imported by `path` at module level or inside functions (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if module_file(candidate) else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("salient_imagenet_builder") and module_file(m)}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_capability_imports_the_command_line():
    offenders = [m for m, deps in graph().items() if "salient_imagenet_builder.cli" in deps]
    assert offenders == []


def test_no_import_cycles_between_modules():
    edges = graph()
    for deps in edges.values():  # a module importing its own package's __init__ is not a cycle worth naming
        deps.discard("salient_imagenet_builder")
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


CAPABILITIES = {"builder", "publish", "evaluation", "discovery", "ingest", "show", "segmentation", "update",
                "generalize", "attach"}  # what a user does (salient_imagenet_builder.CAPABILITIES lists them)
ENGINE = "core"  # what every capability runs on


def package_of(module: str) -> str | None:
    """The first-level package of a module of ours (`builder`, `core`...), or None for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() and len(parts) == 2 else None


def test_every_capability_folder_opens_with_its_stages():
    folders = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert {p.name for p in folders} == CAPABILITIES | {ENGINE}
    for folder in (PACKAGE / name for name in sorted(CAPABILITIES)):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and "stages" in doc.lower(), folder


def test_capabilities_run_on_the_engine_and_never_reach_into_each_other():
    """No capability imports another capability, except its `command.py` calling another's public function (a
    push after a build); nothing in the engine imports a capability."""
    offenders = []
    for module, deps in graph().items():
        own = package_of(module)
        if own is None:
            continue
        for dep in deps:
            other = package_of(dep)
            if other in (None, own, ENGINE):
                continue
            command_calls_public = module.endswith(".command") and dep == f"salient_imagenet_builder.{other}"
            if own == ENGINE or not command_calls_public:
                offenders.append(f"{module} imports {dep}")
    assert offenders == []


def test_a_command_reaches_another_capability_only_through_its_public_names():
    """`from ..publish import run_push`-style imports in a command name what the other package exports."""
    import importlib

    for path in PACKAGE.glob("*/command.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module in CAPABILITIES:
                exported = importlib.import_module(f"salient_imagenet_builder.{node.module}").__all__
                assert all(alias.name in exported for alias in node.names), (path, node.module)


def test_no_package_folder_has_a_name_tools_treat_as_output():
    """black, pytest's norecursedirs, .gitignore templates and packaging tools all skip `build/` and `dist/`."""
    assert not [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name in ("build", "dist")]


def test_every_package_declares_its_public_names():
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)]
        assert "__all__" in names, init


def test_help_imports_neither_torch_nor_timm():
    code = ("import sys, contextlib, io\nfrom salient_imagenet_builder.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "for sub in ('build', 'evaluate', 'check', 'push', 'discover', 'ingest', 'show', 'validate', 'update', 'attach'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main([sub, '--help'])\n"
            "print(sorted(m for m in ('torch', 'timm', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_wheel_carries_the_card_template(tmp_path):
    """The package's dataset_card.md is a link to the top-level template; a wheel must hold its content."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "salient_imagenet_builder/dataset_card.md" in names
        assert archive.read("salient_imagenet_builder/dataset_card.md") == (ROOT / "dataset_card.md").read_bytes()
    target = tmp_path / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    code = "import salient_imagenet_builder.core.card as c; print(c.TEMPLATE)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    template = Path(where.stdout.strip())
    assert template.is_relative_to(target) and not template.is_symlink()
    assert template.read_bytes() == (ROOT / "dataset_card.md").read_bytes()
    page = ROOT / "salient_imagenet_builder" / "core" / "page"
    for name in ("index.html", "app.js", "style.css"):  # the annotation page is package data
        assert f"salient_imagenet_builder/core/page/{name}" in names
    code = ("from salient_imagenet_builder.core.annotation_page import PAGE, render_page, study_data; "
            "print(PAGE); print(len(render_page(study_data([], 'wheel study', mode='discover'))))")
    rendered = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    installed_page, length = rendered.stdout.split()
    assert Path(installed_page).is_relative_to(target)
    assert (Path(installed_page) / "app.js").read_bytes() == (page / "app.js").read_bytes()
    assert int(length) > len((page / "app.js").read_text()) + len((page / "index.html").read_text())


def test_the_package_lists_every_capability_folder():
    import salient_imagenet_builder

    assert set(salient_imagenet_builder.CAPABILITIES) == CAPABILITIES


def capability_names() -> set[str]:
    """What the capabilities register with the engine: their package and command names, their output kinds, marker
    files and owned files, card parts and study kinds. The dataset ("build") is the engine's own kind."""
    from salient_imagenet_builder.core import registry

    kinds = registry.output_kinds()
    ours = {"build"}
    names = set(CAPABILITIES)
    names |= {c.name for c in registry.commands()} - ours
    names |= {k.name for k in kinds.values() if k.name not in ours} | {k.marker for k in kinds.values()
                                                                       if k.name not in ours}
    # a study's pairs.csv and its page are the engine's (core.studies, core.annotation_page), shared by every study
    names |= {p for k in kinds.values() if k.name not in ours for p in k.owns} - {"index.html", "pairs.csv"}
    names |= {p for p in registry.output_kind("build").owns if p not in kinds["build"].owns}
    names |= {p.name for p in registry.card_parts()} | {s.name for s in registry.study_formats()}
    return names


def string_literals(tree: ast.AST) -> set[str]:
    """The string constants a module uses, its docstrings aside (an identifier such as `results` or `update` names
    no capability; a string such as "results" or "discover_info.json" does)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_the_engine_names_no_capability():
    """Adding a capability touches no module of the engine: no module of `core` names (in a string) a capability, its
    commands, its output folders and their files, its card parts or its study kinds (they register themselves), nor
    imports one (`test_capabilities_run_on_the_engine_and_never_reach_into_each_other`)."""
    forbidden = capability_names()
    assert {"study", "discover", "attach_info.json", "generalization study", "results"} <= forbidden  # it sees them
    offenders = {}
    for path in sorted((PACKAGE / ENGINE).rglob("*.py")):
        named = string_literals(ast.parse(path.read_text())) & forbidden
        if named:
            offenders[str(path.relative_to(ROOT))] = sorted(named)
    assert offenders == {}


def test_modules_have_one_concern_and_at_most_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
