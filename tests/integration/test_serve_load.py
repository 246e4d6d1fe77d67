"""A champion swap while clients keep sending (issue 13, "Serving under load"): no request fails,
every answer comes from one of the two *complete* versions, and each client sees old -> new.

Correctness only (few requests, nothing timed); the timed run is benchmarks/serve_load.py.
"""

from __future__ import annotations

import pytest

from synthloop.serve import loadcheck
from synthloop.serve.champion import load_registry_version
from synthloop.serve.loadcheck import Answer, LoadRun, swap_problems

EXPECTED = {"1": (2.0, 1.0, 100.0), "2": (2.0, 1.0, 140.0)}  # (boxes, score sum, coordinate sum)


def answer(client: int, sent: float, version: str | None = "1", status: int = 200,
           found: tuple[float, ...] | None = None) -> Answer:
    return Answer(client, sent, 0.01, status, version,
                  EXPECTED.get(version, (1.0, 0.5, 50.0)) if found is None else found)


def run_of(*answers: Answer, clients: int = 2) -> LoadRun:
    return LoadRun(clients, answers, 1.0, swap_started=1.0, swap_done=2.0)


def test_a_clean_swap_has_no_problems():
    run = run_of(answer(0, 0.0), answer(1, 0.5), answer(0, 1.5, "1"), answer(1, 1.6, "2"),
                 answer(0, 2.5, "2"), answer(1, 2.6, "2"))
    assert swap_problems(run, before="1", after="2", expected=EXPECTED) == []
    assert run.summary()["answers_per_version"] == {"1": 3, "2": 3}


@pytest.mark.parametrize("bad, words", [
    (answer(0, 1.5, None, status=503), "1 of 5 requests failed"),
    (answer(0, 1.5, "3"), "neither v1 nor v2"),
    (answer(0, 1.5, "2", found=EXPECTED["1"]), "half-loaded"),  # says v2, has v1's weights
    (answer(0, 1.5, "2", found=(2.0, 1.0, 120.0)), "half-loaded"),
    (answer(0, 1.5, "2", found=(3.0, 1.5, 140.0)), "half-loaded"),
    (answer(0, 2.1, "1"), "sent after the swap finished were not answered by v2"),
])
def test_each_kind_of_bad_answer_is_named(bad, words):
    run = run_of(answer(0, 0.0), answer(1, 0.5), answer(1, 1.6, "2"), answer(1, 2.6, "2"), bad)
    problems = swap_problems(run, before="1", after="2", expected=EXPECTED)
    assert any(words in p for p in problems), problems


def test_a_client_that_goes_back_is_named():
    run = run_of(answer(0, 0.0), answer(0, 1.2, "2"), answer(0, 1.4, "1"), answer(1, 2.5, "2"))
    assert any("client 0 went back" in p for p in swap_problems(run, before="1", after="2",
                                                                 expected=EXPECTED))


def test_only_loopback_is_driven():
    with pytest.raises(ValueError, match="loopback"):
        loadcheck.run("http://example.com/predict", b"x", clients=1, requests=1)


@pytest.mark.slow
def test_swap_under_load_drops_nothing_and_serves_only_complete_models(tmp_path):
    pytest.importorskip("uvicorn")
    from serve_support import swap_scene

    with swap_scene(tmp_path) as scene:
        run = loadcheck.run(scene.url, scene.image, clients=4, requests=16,
                            swap=scene.swap_to("2"), swap_after=4, after_swap=4, max_seconds=240)
    assert swap_problems(run, before="1", after="2", expected=scene.expected) == []
    summary = run.summary()
    assert summary["failed"] == 0 and set(summary["answers_per_version"]) == {"1", "2"}


@pytest.mark.slow
def test_a_half_loaded_model_is_caught(tmp_path):
    """The check has teeth: a loader that publishes v2 with half of v1's weights is named."""
    pytest.importorskip("uvicorn")
    from serve_support import swap_scene

    def torn_loader(client, name, version):
        loaded = load_registry_version(client, name, version)
        if loaded.version != "1":
            v1 = load_registry_version(client, name, client.get_model_version(name, "1"))
            state = loaded.model.state_dict()
            keys = list(state)
            loaded.model.load_state_dict({**state, **{k: v1.model.state_dict()[k]
                                                      for k in keys[: len(keys) // 2]}})
        return loaded

    with swap_scene(tmp_path, loader=torn_loader) as scene:
        run = loadcheck.run(scene.url, scene.image, clients=2, requests=6,
                            swap=scene.swap_to("2"), swap_after=2, after_swap=2, max_seconds=240)
    problems = swap_problems(run, before="1", after="2", expected=scene.expected)
    assert any("half-loaded" in p for p in problems), problems
