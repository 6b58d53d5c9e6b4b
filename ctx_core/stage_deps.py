"""``dvc.yaml``'s code deps and params, generated from the stage table and the imports.

A stage's code is every ``ctx_core`` module that ``ctx <stage>`` can import:
the closure, over ``import`` statements anywhere in a module (functions
included), of ``ctx_core.cli.main`` and the stage's ``cli`` module, with the
packages that contain them. ``cli.main`` imports a stage's module by name from
the table, so other stages' code is not in the closure. A package folder all
of whose ``.py`` files are in the closure is listed as the folder.

    python -m ctx_core.stage_deps --check   # exit 1 naming each stage and path that differs
    python -m ctx_core.stage_deps --write   # rewrite dvc.yaml's code deps and params in place

``tests/test_stage_deps.py`` runs the check; ``tests/test_two_doors.py``
checks the modules the smoke run of every stage actually imported against
the deps (``covered``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from ctx_core.stages import STAGES, Stage

PACKAGE = "ctx_core"
ROOT = Path(__file__).resolve().parent.parent
ENTRY = "ctx_core.cli.main"


@lru_cache(maxsize=None)
def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> source file of every module in ``ctx_core`` (packages by ``__init__.py``)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """``ctx_core`` modules named by the import statements of ``path`` (anywhere in it)."""
    modules = _modules()
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m in modules}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(entries: Iterable[str]) -> set[str]:
    """Every ``ctx_core`` module importing ``entries`` can execute, parents included."""
    modules = _modules()
    todo = [p for e in entries for p in _with_parents(e)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        for imported in _imports(name, modules[name]):
            todo.extend(_with_parents(imported))
    return seen


def code_deps(stage: Stage) -> list[str]:
    """Repo-relative paths covering the stage's code: folders where whole, else files; sorted."""
    modules = _modules()
    files = {modules[m].relative_to(ROOT).as_posix() for m in closure([ENTRY, stage.cli])}
    every = {p.relative_to(ROOT).as_posix() for p in modules.values()}
    folders = sorted({str(Path(f).parent) for f in every}, key=lambda d: d.count("/"))
    whole = set()
    for folder in folders:
        if folder == PACKAGE or any(folder.startswith(w + "/") for w in whole):
            continue
        inside = {f for f in every if f.startswith(folder + "/")}
        if inside <= files:
            whole.add(folder)
    listed = {f for f in files if not any(f.startswith(w + "/") for w in whole)}
    return sorted(whole | listed)


def covered(path: str, deps: Iterable[str]) -> bool:
    """Whether the repo-relative ``path`` is one of ``deps`` or inside a folder of them."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _stage_body(dvc: dict, stage: Stage) -> dict | None:
    body = dvc.get("stages", {}).get(stage.name)
    if body is None:
        return None
    return body["do"] if stage.foreach else body


def _is_code(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith(PACKAGE + "/")


def problems(dvc: dict) -> list[str]:
    """Each way ``dvc.yaml`` (parsed, ``${...}`` unexpanded) differs from the table and the imports."""
    out = []
    names = set(dvc.get("stages", {}))
    for extra in sorted(names - {s.name for s in STAGES}):
        out.append(f"dvc.yaml stage {extra!r} is not in the stage table (ctx_core/stages.py)")
    for stage in STAGES:
        body = _stage_body(dvc, stage)
        if body is None:
            out.append(f"stage {stage.name!r} of the stage table is missing from dvc.yaml")
            continue
        if bool(stage.foreach) != ("foreach" in dvc["stages"][stage.name]):
            out.append(f"dvc.yaml stage {stage.name!r}: foreach must be {'${' + stage.foreach + '}' if stage.foreach else 'absent'}")
        want = code_deps(stage)
        have = [d for d in body.get("deps", []) if isinstance(d, str) and _is_code(d)]
        for missing in sorted(set(want) - set(have)):
            out.append(f"dvc.yaml stage {stage.name!r}: its code {missing} is not in deps")
        for extra in sorted(set(have) - set(want)):
            out.append(f"dvc.yaml stage {stage.name!r}: dep {extra} is not code the stage imports")
        params = [p for p in body.get("params", []) if isinstance(p, str)]
        if params != list(stage.params):
            out.append(f"dvc.yaml stage {stage.name!r}: params {params} differ from the stage table's {list(stage.params)}")
        if not str(body.get("cmd", "")).startswith(f"ctx {stage.name}"):
            out.append(f"dvc.yaml stage {stage.name!r}: cmd {body.get('cmd')!r} must run `ctx {stage.name}`")
    return out


def write(path: Path) -> int:
    """Rewrite the code deps and params of every stage in ``path`` (comments kept); returns stages changed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(path.read_text())
    changed = 0
    for stage in STAGES:
        body = _stage_body(data, stage)
        if body is None:
            continue
        deps = body.get("deps", [])
        new_deps = [d for d in deps if not (isinstance(d, str) and _is_code(d))] + code_deps(stage)
        if list(deps) != new_deps or list(body.get("params", [])) != list(stage.params):
            changed += 1
            deps.clear()
            deps.extend(new_deps)
            params = body.setdefault("params", [])
            params.clear()
            params.extend(stage.params)
    with open(path, "w") as f:
        yaml.dump(data, f)
    return changed


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(prog="python -m ctx_core.stage_deps", description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=ROOT / "dvc.yaml")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is not current")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps and params")
    args = parser.parse_args(argv)
    if args.write:
        print(f"{args.file}: {write(args.file)} stage(s) updated")
        return 0
    found = problems(yaml.safe_load(args.file.read_text()))
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("run `python -m ctx_core.stage_deps --write` to update dvc.yaml", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
