"""CI cannot skip its way to green, and docs/reliability.md only holds complete runs.

Each test runs pytest in a subprocess on a few generated test files, under copies of the
project's own conftest files (tests/conftest.py, tests/faults/conftest.py), once as a developer
would (skips allowed) and once as CI does (``CI=true`` or ``SYNTHLOOP_STRICT=1``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]

ENVIRONMENT_SKIPS = '''
import pytest

@pytest.fixture(scope="session")
def blender():
    pytest.skip("no Blender environment: run `make setup`")

def test_fixture_skip(blender):
    pass

def test_importorskip():
    pytest.importorskip("synthloop_no_such_module")

@pytest.mark.skipif(True, reason="no Label Studio environment: run `make labelstudio`")
def test_skipif():
    pass

@pytest.mark.allow_skip(reason="opt-in docs screenshot")
def test_allowed_skip():
    pytest.skip("SYNTHLOOP_SCREENSHOT_DIR is not set")

@pytest.mark.xfail(reason="a known bug, not an environment", strict=True)
def test_xfail():
    assert False

def test_runs():
    pass
'''

FAULT_ROWS = '''
import os
import pytest

def test_checkpoint_row(report):
    report("full disk while checkpointing", "ENOSPC", "n/a")

def test_render_row(report):
    if os.environ.get("FAKE_NO_ROOT"):
        pytest.skip("cannot mount a tmpfs (needs root)")
    report("full disk while rendering", "stopped", "n/a")
'''


@pytest.fixture()
def project(pytester, monkeypatch):
    """pytester with the project's tests/conftest.py, and neither CI nor SYNTHLOOP_STRICT."""
    for name in ("CI", "SYNTHLOOP_STRICT", "SYNTHLOOP_RELIABILITY_DOC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the same outcome on a machine with a GPU
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # starts in a second, not ten
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the conftest copies import tests' helpers
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    return pytester


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args, timeout=300)


def test_environment_skips_pass_locally(project):
    project.makepyfile(test_env=ENVIRONMENT_SKIPS)
    result = run(project)
    result.stdout.fnmatch_lines(["skips: allowed (not CI)"])
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)


@pytest.mark.parametrize("variable", ["CI=true", "SYNTHLOOP_STRICT=1"])
def test_environment_skips_fail_under_ci_with_their_reason(project, monkeypatch, variable):
    name, _, value = variable.partition("=")
    monkeypatch.setenv(name, value)
    project.makepyfile(test_env=ENVIRONMENT_SKIPS)
    result = run(project)
    # skips in setup (fixture, skipif) become errors, in the test body failures; the allowed
    # skip stays a skip, an xfail stays an xfail
    result.assert_outcomes(passed=1, errors=2, failed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"skips: fail ({variable})"])
    out = result.stdout.str()
    for reason in ("no Blender environment: run `make setup`",
                   "could not import 'synthloop_no_such_module'",
                   "no Label Studio environment: run `make labelstudio`"):
        assert reason in out, reason
    assert f"test_env.py::test_fixture_skip skipped under CI ({variable})" in out


def test_ci_false_is_not_ci(project, monkeypatch):
    monkeypatch.setenv("CI", "false")
    project.makepyfile(test_env=ENVIRONMENT_SKIPS)
    assert run(project).ret == pytest.ExitCode.OK


def test_gpu_tests_are_deselected_not_skipped_without_cuda(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_gpu="""
        import pytest

        @pytest.mark.gpu
        def test_needs_cuda():
            pass

        def test_runs_anywhere():
            pass
    """)
    result = run(project)
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.OK


def test_a_module_level_importorskip_fails_collection_under_ci(project, monkeypatch):
    project.makepyfile(test_serving='''
        import pytest
        uvicorn = pytest.importorskip("synthloop_no_such_server")

        def test_serves():
            pass
    ''')
    assert run(project).ret == pytest.ExitCode.NO_TESTS_COLLECTED  # locally: the file skips
    monkeypatch.setenv("CI", "true")
    result = run(project)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # an error during collection
    result.stdout.fnmatch_lines(["*could not import 'synthloop_no_such_server'*"])


# ---------------------------------------------------------------- docs/reliability.md rows
@pytest.fixture()
def fault_suite(project, monkeypatch):
    """A tests/faults copy (its conftest.py and fault_support.py) with two row-writing tests,
    and an old docs/reliability.md that must change only after a complete run."""
    faults = project.mkdir("faults")
    for name in ("conftest.py", "fault_support.py"):
        shutil.copy(TESTS / "faults" / name, faults / name)
    (faults / "test_rows.py").write_text(FAULT_ROWS)
    doc = project.path / "docs" / "reliability.md"
    doc.parent.mkdir()
    doc.write_text("the last complete run\n")
    monkeypatch.setenv("SYNTHLOOP_RELIABILITY_DOC", str(doc))
    return project, doc


def test_reliability_doc_is_written_when_every_row_ran(fault_suite):
    pytester, doc = fault_suite
    result = run(pytester, "faults")
    result.assert_outcomes(passed=2)
    text = doc.read_text()
    assert "| full disk while checkpointing | ENOSPC |" in text
    assert "| full disk while rendering | stopped |" in text and "2 rows" in text


def test_a_skipped_row_leaves_the_doc_alone_and_says_why(fault_suite, monkeypatch):
    pytester, doc = fault_suite
    monkeypatch.setenv("FAKE_NO_ROOT", "1")
    result = run(pytester, "faults")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK  # locally a skip is allowed ...
    assert doc.read_text() == "the last complete run\n"  # ... but the doc keeps its last run
    result.stdout.fnmatch_lines(["*reliability.md NOT rewritten: not passed (1): "
                                 "faults/test_rows.py::test_render_row (skipped)*"])


def test_a_deselected_row_leaves_the_doc_alone(fault_suite):
    pytester, doc = fault_suite
    result = run(pytester, "faults", "-k", "checkpoint")
    result.assert_outcomes(passed=1, deselected=1)
    assert doc.read_text() == "the last complete run\n"
    result.stdout.fnmatch_lines(["*NOT rewritten: deselected (1): "
                                 "faults/test_rows.py::test_render_row*"])


def test_a_missing_row_fails_ci(fault_suite, monkeypatch):
    pytester, doc = fault_suite
    monkeypatch.setenv("FAKE_NO_ROOT", "1")
    monkeypatch.setenv("CI", "true")
    result = run(pytester, "faults")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cannot mount a tmpfs (needs root)*"])
    assert doc.read_text() == "the last complete run\n"


def test_a_fault_test_may_not_be_allowed_to_skip(fault_suite):
    pytester, _ = fault_suite
    (pytester.path / "faults" / "test_allowed.py").write_text(
        "import pytest\n\n@pytest.mark.allow_skip(reason='no root')\ndef test_x():\n    pass\n")
    result = run(pytester, "faults")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*may not be allowed to skip*"])


def test_test_modules_have_unique_names_across_folders():
    """tests/ has no __init__.py files, so pytest imports each test file under its bare name:
    two folders holding the same file name stop the whole run at collection ("import file
    mismatch"), which a run of one folder or one file never shows."""
    seen: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    clashes = {name: where for name, where in seen.items() if len(where) > 1}
    assert not clashes, f"test files with the same name in two folders: {clashes}"
