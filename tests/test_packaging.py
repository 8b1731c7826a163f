"""Installed, mailprobe claims one top-level name: engine/ and connectors/ live under it.

The folders stay where the layout puts them (pyproject.toml maps them); generic names such as
`engine` or `connectors` in site-packages would collide with any other distribution's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "mailprobe": "mailprobe",
    "engine": "mailprobe.engine",
    "connectors": "mailprobe.connectors",
}


def _package_of(folder: Path) -> str:
    top, *rest = folder.relative_to(ROOT).parts
    return ".".join([FOLDERS[top], *rest])


def test_every_package_folder_is_installed_under_mailprobe() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = set(config["tool"]["setuptools"]["packages"])
    found = {
        _package_of(init.parent) for top in FOLDERS for init in (ROOT / top).rglob("__init__.py")
    }
    assert declared == found


def test_no_module_imports_the_folders_by_their_bare_names() -> None:
    bare = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in (".venv", "build"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bare += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0] in ("engine", "connectors")
            ]
    assert bare == []


def test_installed_distribution_has_no_top_level_engine_or_connectors(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u, mailprobe.engine, mailprobe.connectors;"
        "print(u.find_spec('engine'), u.find_spec('connectors'))"
    )
    # -I: isolated, so neither the checkout nor the working folder is on sys.path.
    run = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "None"]
