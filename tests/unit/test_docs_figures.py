"""Every figure in a docs table traces to a results file (issue 13, "Figures that trace to data").

A number in a markdown table of docs/*.md must appear, to the precision printed, in a results
file committed under benchmarks/results/ or docs/results/ (JSON, CSV or markdown), or be marked
"not recorded": in its cell, or by a paragraph just above its table that starts with "Not
recorded" (then the whole table is).

Explicit allowances, each with its reason: docs a run writes whole (GENERATED: they are results
files themselves), docs whose results are still being produced (PENDING: delete the line once
they are committed), and columns that hold settings rather than measurements (INPUT_COLUMNS).
Headers, `code spans` and link targets are not figures.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULT_DIRS = (ROOT / "benchmarks" / "results", DOCS / "results")
RESULT_SUFFIXES = (".json", ".csv", ".md")
NOT_RECORDED = "not recorded"

GENERATED = {"reliability.md": "make test-faults writes it from the rows of a green run"}
PENDING: dict[str, str] = {}
# Column headers (lower case) whose cells are settings, counts or names, not measurements.
INPUT_COLUMNS = {"k", "seed", "setting", "workers", "images", "spp", "preset",
                 "quality, spp, denoiser", "renderer", "backend", "strategy", "condition",
                 "flow", "what", "setup", "real images", "labelled images"}

NUMBER = re.compile(r"(?<![\w.])(\d+(?:,\d{3})*(?:\.\d+)?)(%?)")
CODE = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
SEPARATOR = re.compile(r"^\|[\s:|-]+\|$")


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(the paragraph just above, header cells, body rows) of each markdown table in ``text``."""
    lines, found, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and SEPARATOR.match(lines[i + 1]):
            above = _paragraph_before(lines, i)
            head, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((above, head, rows))
        else:
            i += 1
    return found


def _paragraph_before(lines: list[str], i: int) -> str:
    j = i
    while j > 0 and not lines[j - 1].strip():
        j -= 1
    start = j
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return " ".join(lines[start:j])


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def figures(cell: str) -> list[tuple[str, bool]]:
    """(number as printed, followed by %) for each figure in a cell."""
    cell = LINK_TARGET.sub("]", CODE.sub("", cell))
    return [(m.group(1).replace(",", ""), bool(m.group(2))) for m in NUMBER.finditer(cell)]


def _numbers_in(obj, out: list[float]) -> None:
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        out.append(float(obj))
    elif isinstance(obj, str):
        out.extend(float(n.replace(",", "")) for n, _ in NUMBER.findall(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _numbers_in(v, out)


def recorded_values() -> list[float]:
    """Every number in every results file, sorted (JSON: values, and numbers inside strings)."""
    out: list[float] = []
    files = [p for d in RESULT_DIRS if d.is_dir() for p in sorted(d.rglob("*"))
             if p.suffix in RESULT_SUFFIXES]
    files += [DOCS / name for name in GENERATED]
    for path in files:
        text = path.read_text()
        _numbers_in(json.loads(text) if path.suffix == ".json" else text, out)
    return sorted(out)


def traced(printed: str, percent: bool, values: list[float]) -> bool:
    """``printed`` is some recorded value rounded to the decimals shown (or 100x it, for a %)."""
    x = float(printed)
    half = 0.5 * 10 ** -(len(printed.split(".")[1]) if "." in printed else 0) + 1e-9
    for target, tol in [(x, half)] + ([(x / 100, half / 100)] if percent else []):
        j = bisect.bisect_left(values, target - tol)
        if j < len(values) and values[j] <= target + tol:
            return True
    return False


def untraced(doc: Path, values: list[float]) -> list[str]:
    out = []
    for above, head, rows in tables(doc.read_text()):
        if above.lstrip("*_ ").lower().startswith(NOT_RECORDED):
            continue
        for row in rows:
            for col, cell in zip(head, row):
                if col.strip("* ").lower() in INPUT_COLUMNS or NOT_RECORDED in cell.lower():
                    continue
                bad = [n for n, pct in figures(cell) if not traced(n, pct, values)]
                if bad:
                    out.append(f"{doc.name}: | {row[0][:50]} | column {col!r}: {cell!r} -> {bad}")
    return out


CHECKED = sorted(p.name for p in DOCS.glob("*.md") if p.name not in {*GENERATED, *PENDING})


@pytest.mark.parametrize("name", CHECKED)
def test_every_table_figure_traces_to_a_results_file(name):
    problems = untraced(DOCS / name, recorded_values())
    assert not problems, ("figures with no results file (commit the results, or mark the cell or "
                          "the table 'not recorded'):\n" + "\n".join(problems))


def test_allowances_name_existing_docs():
    for name in (*GENERATED, *PENDING):
        assert (DOCS / name).is_file(), f"{name} is allowed in this test but no longer exists"


@pytest.mark.parametrize("cell, printed, ok", [
    ("146.3 s", "146.3", True), ("**1.15 s**", "1.15", True), ("226 s", "226", False),
    ("96.1%", "96.1", False), ("3.86%", "3.86", True), ("0.39 (2/30)", "0.39", False),
])
def test_the_check_rounds_but_does_not_guess(cell, printed, ok):
    values = sorted([146.3, 1.152, 0.0386, 0.0667, 2.0, 30.0])
    (first, pct), *_ = figures(cell)
    assert first == printed and traced(first, pct, values) is ok


def test_figures_skip_code_links_and_names():
    assert figures("`0 2 * * *` [v2](docs/x2.md) R50-FPN 640x360 AP50 3.84x 1.75-2.76") == [
        ("640", False), ("3.84", False), ("1.75", False), ("2.76", False)]


def test_a_table_is_exempt_only_under_a_not_recorded_paragraph(tmp_path):
    table = "| what | s |\n|---|---|\n| run | 226 |\n"
    doc = tmp_path / "doc.md"
    doc.write_text(f"Timed once, not recorded anywhere, see below.\n\n{table}")
    assert len(untraced(doc, [146.3])) == 1  # "not recorded" inside a sentence: still checked
    doc.write_text(f"Not recorded (no results file):\n\n{table}")
    assert untraced(doc, [146.3]) == []
    doc.write_text(table.replace("226", "not recorded"))
    assert untraced(doc, [146.3]) == []
