"""The tree's layering: pipelines -> transforms -> models, and no stage imports another."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from latentpress.cli import STAGES

ROOT = Path(__file__).resolve().parents[1]
# Each layer imports only the ones after it; latentpress/ (version, embedded samples) is the
# bottom, apart from the user's surfaces on top of everything: the command (cli.py, which
# loads stages by name), the Python API (api.py) and the Pillow plugin (pillow_plugin.py).
LAYERS = ("pipelines", "transforms", "models", "latentpress")
ON_TOP = {"latentpress/api.py", "latentpress/pillow_plugin.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_stage_imports_another_stage():
    stages = {module for module, _ in STAGES.values()}
    for module in stages:
        path = ROOT / (module.replace(".", "/") + ".py")
        others = imported_modules(path) & (stages - {module})
        assert not others, f"{module} imports the stage(s) {sorted(others)}"


def test_lower_layers_never_import_higher_ones():
    for index, layer in enumerate(LAYERS[1:], start=1):
        higher = LAYERS[:index]
        for path in sorted((ROOT / layer).glob("*.py")):
            if str(path.relative_to(ROOT)) in ON_TOP:
                continue
            offending = {
                m
                for m in imported_modules(path)
                if m.split(".")[0] in higher and m != "latentpress"
            }
            assert not offending, f"{path.relative_to(ROOT)} imports {sorted(offending)}"


def _tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked tree is unknown")
    return listed.stdout.splitlines()


def test_the_readme_layout_lists_every_folder_and_only_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    described = {row.split("`")[1].rstrip("/"): row for row in rows}
    folders = {path.split("/")[0] for path in _tracked_files() if "/" in path}
    folders = {f for f in folders if not f.startswith(".")}
    assert set(described) == folders, "README layout vs tracked folders"
    for folder, row in described.items():
        for name in row.split("|", 2)[2].split("`")[1::2]:
            if name.endswith(".py"):
                assert (ROOT / folder / name).exists(), f"README names {folder}/{name}"
