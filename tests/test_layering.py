"""Production code never imports the development stack (``quartier.stack``), and each package imports
only the packages docs/architecture.md's table says it may (data flows one way).

Every module of the production packages is parsed and each of its imports (module level or inside a
function, absolute or relative) resolved to a module name. The development side is ``quartier.stack``
itself, the demo that runs it, and the benchmarks; the ``quartier`` command may name the stack only
inside its ``stack`` commands (imported when one of them runs, never by ``quartier streams run``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_PACKAGES = ("quartier", "api", "streams", "notifier", "marketplace", "contracts", "simulator", "accounts", "privacy",
                       "households", "console")
DEVELOPMENT_MODULES = ("quartier.stack", "quartier.demo")
STACK = "quartier.stack"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from quartier import stack`` imports the subpackage too.
            found += [(source, node.lineno, id(node) in top_level)]
            found += [(f"{source}.{alias.name}", node.lineno, id(node) in top_level) for alias in node.names]
    return found


def production_modules() -> list[Path]:
    paths = []
    for package in PRODUCTION_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not any(is_within(module_name(path), dev) for dev in DEVELOPMENT_MODULES):
                paths.append(path)
    return paths


def test_the_walk_sees_every_production_package_and_imports_inside_functions() -> None:
    names = {module_name(path) for path in production_modules()}
    assert {"streams.worker", "streams.influx_writer", "notifier.firebase", "marketplace.charts"} <= names
    assert not any(is_within(name, STACK) for name in names)
    # Imports inside functions count (the worker prepares InfluxDB lazily).
    worker = imports(ROOT / "streams" / "worker.py")
    assert "quartier.influx.ensure_database" in {module for module, _, top_level in worker if not top_level}


def test_no_production_module_imports_the_development_stack() -> None:
    offenders = []
    for path in production_modules():
        name = module_name(path)
        for module, line, top_level in imports(path):
            if not any(is_within(module, dev) for dev in DEVELOPMENT_MODULES):
                continue
            if name == "quartier.cli" and not top_level:
                continue  # the ``stack`` and ``demo`` commands, imported when they run
            offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offenders == []


def allowed_imports() -> dict[str, set[str]]:
    """package -> the packages of ours it may import, from docs/architecture.md's table ("may import")."""
    allowed = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `(\w+)` \| .* \| (.*) \|$", line)
        if row and row.group(1) in PRODUCTION_PACKAGES:
            allowed[row.group(1)] = set(re.findall(r"`(\w+)[`.]", row.group(2)))
    return allowed


def test_each_package_imports_only_what_the_architecture_allows() -> None:
    # e.g. the console may not import privacy (a sibling downstream of accounts): what both need, the
    # access log, is the core's.
    allowed = allowed_imports()
    assert set(allowed) == set(PRODUCTION_PACKAGES)
    assert allowed["console"] == {"quartier", "api", "accounts"} and allowed["quartier"] == set()
    offenders = set()
    for path in production_modules():
        package = module_name(path).split(".")[0]
        for module, line, _ in imports(path):
            target = module.split(".")[0]
            if target in PRODUCTION_PACKAGES and target != package and target not in allowed[package]:
                offenders.add(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert sorted(offenders) == []
