"""docs/architecture.md stays true: every registry its extension-point table names exists and
holds exactly the entries listed, every file it names exists, and the library layer it
describes imports neither the stages above it nor Prefect."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
CODE = re.compile(r"`([^`]+)`")
LIBRARY = ("active", "detection", "gating", "monitoring", "data", "synthesis", "steering",
           "versioning", "experiments", "reports")


def extension_rows() -> list[dict[str, str]]:
    """The rows of the table under '## Extension points', by header."""
    text = DOC.read_text().split("## Extension points", 1)[1]
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|"))))
            for ln in lines[2:] if not set(ln) <= set("|-: ")]


def resolve(dotted: str):
    """``pkg.module.ATTR`` or ``pkg.module.func()`` -> the object (called when it ends in ())."""
    call = dotted.endswith("()")
    parts = dotted.removesuffix("()").split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj() if call else obj
    raise AssertionError(f"{dotted}: no importable module")


ROWS = extension_rows()


def test_the_table_lists_the_extension_points_of_issue_14():
    assert {r["extension point"] for r in ROWS} >= {"query strategy", "cycle trigger",
                                                   "scene preset", "detector backend"}


@pytest.mark.parametrize("row", ROWS, ids=[r["extension point"] for r in ROWS])
def test_each_registry_exists_and_holds_the_listed_entries(row):
    (registry,) = CODE.findall(row["registry"])
    names = list(resolve(registry))
    assert names, f"{registry} is empty"
    listed = CODE.findall(row["entries"])
    assert sorted(listed) == sorted(names), (
        f"docs/architecture.md lists {listed} for {registry}, which holds {names}")
    for path in CODE.findall(row["the one file"]):
        where = ROOT / path
        assert (where.parent if "<name>" in path else where).exists(), path


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_library_imports_neither_stages_nor_prefect():
    bad = []
    for package in LIBRARY:
        for path in sorted((ROOT / "src" / "synthloop" / package).rglob("*.py")):
            for name in _imports(path):
                if name.startswith(("synthloop.stages", "prefect")) or name == "synthloop.stages":
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "the library reaches up (docs/architecture.md, Layers):\n" + "\n".join(bad)


FILE_PATH = re.compile(r"(?<![\w./-])((?:src|tests|stages|synthloop|synthesis|detection|flows)/"
                  r"[\w/]+\.(?:py|md|yaml))")


def test_every_file_the_page_names_exists():
    """Paths like ``stages/label.py``, ``synthloop/reports/cycle_report.py`` or
    ``tests/unit/...`` (from the repository, src/ or src/synthloop/)."""
    bases = (ROOT, ROOT / "src", ROOT / "src" / "synthloop")
    named = sorted(set(FILE_PATH.findall(DOC.read_text())))
    assert len(named) > 10
    missing = [p for p in named if not any((b / p).is_file() for b in bases)]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_the_cycle_names_every_stage_the_pipeline_runs():
    """Each ``runner(name, <stage>.run, ...)`` of stages/pipeline.py has its line in "The
    cycle, as data"."""
    text = DOC.read_text()
    cycle = text.split("## The cycle, as data", 1)[1].split("\n## ", 1)[0]
    tree = ast.parse((ROOT / "src" / "synthloop" / "stages" / "pipeline.py").read_text())
    run = {call.args[1].value.id for call in ast.walk(tree)
           if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "runner"
           and len(call.args) > 1 and isinstance(call.args[1], ast.Attribute)
           and call.args[1].attr == "run" and isinstance(call.args[1].value, ast.Name)}
    assert {"score", "query", "label", "finetune", "gate"} <= run
    missing = sorted(m for m in run if f"stages/{m}.py" not in cycle)
    assert not missing, f"stages the pipeline runs but docs/architecture.md's cycle omits: {missing}"
