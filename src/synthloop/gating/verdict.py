"""A gate decision in the words a reviewer reads on MLflow's model pages (pure: text only).

``version_verdict``: the first line of the candidate version's description, e.g.
    promoted: AP +0.034, 90% interval [+0.012, +0.051] over 200 resamples; per-class ok
    refused: AP +0.004, 90% interval [-0.010, +0.020] over 200 resamples, needs > +0.010;
        per-class ok
    refused: gate could not evaluate (bootstrap failed: ...)
``version_description``: that line, then the gate's full reason, rule and cycle.
``serving_description``: the registered model's description: which version serves, since when.
``stages/gate.py`` writes them through ``gating.registry.write_descriptions``.
"""

from __future__ import annotations

from typing import Any, Mapping

from synthloop.gating.decision import RULE_NO_CHAMPION, RULE_REFUSED, RULE_RESUMED

MODEL_NOTE = ("synthloop detector of pipeline {pipeline!r}: alias 'champion' serves, "
              "'challenger' is the last candidate; each version's description holds the "
              "gate's verdict on it.")


def _signed(value: Any) -> str:
    """``+0.034``; a non-zero value that three decimals would show as 0 gets four."""
    value = float(value)
    return f"{value:+.4f}" if 0 < abs(value) < 0.0005 else f"{value:+.3f}"


def _per_class(record: Mapping[str, Any]) -> str:
    drops = record.get("class_drops") or []
    regressed = [d for d in drops if d.get("regressed")]
    if not drops:
        return ""
    if not regressed:
        return "per-class ok"
    return "; ".join(f"class {d['name']!r} AP {-float(d['drop']):+.3f} "
                     f"({float(d['champion']):.3f} -> {float(d['candidate']):.3f})"
                     for d in regressed)


def version_verdict(record: Mapping[str, Any], *, min_improvement: float | None = None) -> str:
    """One line: promoted/refused, the gain and its interval, the per-class check."""
    rule, metric = record.get("rule"), record.get("metric") or "AP"
    if rule == RULE_REFUSED:
        return str(record["reason"])
    if rule == RULE_RESUMED:
        return f"promoted: {record['reason']}"
    if rule == RULE_NO_CHAMPION:
        value = record.get("candidate_value")
        return ("promoted: first champion (no champion to beat)"
                + (f"; {metric} {float(value):.3f}" if value is not None else ""))
    verb = "promoted" if record.get("promote") else "refused"
    parts = [f"{verb}: {metric} {_signed(record['improvement'])}"
             if record.get("improvement") is not None else f"{verb}: {metric} gain unknown"]
    interval = record.get("interval")
    if interval:
        parts.append(f", {float(interval['confidence']):.0%} interval "
                     f"[{_signed(interval['lower'])}, {_signed(interval['upper'])}] "
                     f"over {int(interval['resamples'])} resamples")
    else:
        parts.append(" (point estimates, no interval)")
    gain = interval["lower"] if interval else record.get("improvement")
    if min_improvement is not None and gain is not None and float(gain) <= min_improvement:
        parts.append(f", needs > {_signed(min_improvement)}")
    per_class = _per_class(record)
    return "".join(parts) + (f"; {per_class}" if per_class else "")


def version_description(record: Mapping[str, Any], *, min_improvement: float | None = None,
                        when: str) -> str:
    """The candidate version's description: the verdict, then the gate's reason in full."""
    before = record.get("champion_version_before")
    return (f"{version_verdict(record, min_improvement=min_improvement)}\n\n"
            f"Gate of cycle {record.get('cycle')} at {when} (rule: {record.get('rule')}; "
            f"champion before: {'v' + str(before) if before else 'none'}): {record['reason']}")


def serving_description(*, pipeline: str, version: str, since: str, cycle: Any,
                        verdict: str) -> str:
    """The registered model's description: the serving version, since when, and why."""
    return (f"Serving: v{version} (alias 'champion') since {since}, promoted by the gate of "
            f"cycle {cycle}: {verdict}\n\n" + MODEL_NOTE.format(pipeline=pipeline))
