"""One active-learning cycle as a single self-contained HTML page: ``render_html(records)``.

What a reviewer asks of a cycle, top to bottom: what did the gate decide and on what evidence,
what did the cycle's MLflow run record, how did AP and AP50 move across cycles (with bootstrap
intervals), which classes moved, which images were queried (boxes drawn), what the labels
cost, whether the pool drifted, the sim-to-real gap, and what the failure analysis changed.

Pure: ``CycleRecords`` (the stage records, the run's metrics, encoded thumbnails) in, a string
out; images are inlined as data URIs and the curve is inline SVG, so the file opens anywhere,
offline, as one MLflow artifact. Every number taken from the MLflow run is printed by
``format_value`` in an element carrying ``data-metric`` (its key) and ``data-value`` (its
exact value), so a test can hold the page to the run.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from synthloop.reports.charts import CurvePoint, class_colour, curve_svg, data_uri

NOT_RECORDED = "not recorded"
LABEL_COST_KEYS = ("label_seconds", "ap_gain_per_label_minute")
CURVE_METRICS = ("AP", "AP50")
KNOWN = {  # what a metric of the cycle run means, for the table
    "val_AP": "COCO AP@[.5:.95] of the candidate on the validation set",
    "val_AP50": "AP at IoU 0.5", "val_AP75": "AP at IoU 0.75",
    "labels_total": "labelled images after this cycle",
    "labels_new": "images labelled in this cycle (each cost a label)",
    "promoted": "1 = the candidate became champion",
    "query_excluded": "unlabelled candidates no oracle could label",
    "query_new_labels": "images of the batch not labelled before",
    "label_seconds": "annotator seconds spent on this cycle's labels",
    "label_minutes": "the same in minutes",
    "ap_gain_per_label_minute": "AP gain per labelling minute",
    "label_expected_gain_per_minute": "expected AP gain per labelling minute (the stop rule)",
    "label_saturated": "1 = the stop rule says querying no longer pays",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;padding:0 16px;max-width:1060px;
color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;
padding-bottom:3px;margin-top:28px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}td.num{text-align:right;
font-variant-numeric:tabular-nums}.verdict{font-size:16px;padding:8px 12px;border-radius:4px}
.promoted{background:#e3f4e8}.kept{background:#fdf1dc}.muted{color:#666;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;font-size:12px}
figure img{display:block;border:1px solid #ccc;width:245px}img.wide{max-width:100%}
.key{display:inline-block;width:12px;height:12px;border:2px solid;margin:0 4px 0 10px}
"""


@dataclass(frozen=True)
class Thumbnail:
    """A queried image with its labels drawn (``jpeg``), its query score and its box count."""

    image_id: int
    jpeg: bytes
    score: float | None
    boxes: int
    new: bool  # labelled in this cycle (False: chosen again from the labelled set)


@dataclass(frozen=True)
class HistoryRow:
    """One cycle's model on the validation set (cycle 0: pretrained on renders)."""

    cycle: int
    version: str
    metrics: Mapping[str, float]  # AP, AP50, AP75, AP_<class>
    promoted: bool
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class CycleRecords:
    """Everything the page shows; records are the stage records as json holds them."""

    pipeline: str
    cycle: int
    run_id: str
    run_metrics: Mapping[str, float]  # the cycle's MLflow run, as logged
    history: Sequence[HistoryRow]  # cycles 0..cycle
    gate: Mapping[str, Any]  # state/cycle_<t>/gate.json
    query: Mapping[str, Any]  # state/cycle_<t>/query.json
    label: Mapping[str, Any]  # state/cycle_<t>/label.json
    label_cost: Mapping[str, Any] | None  # state/cycle_<t>/label_cost.json, when recorded
    class_names: Sequence[str]
    thumbnails: Sequence[Thumbnail] = ()
    thumbnails_left_out: int = 0
    gate_figure: bytes | None = None  # the gate run's gate_report.png
    monitor_checks: Sequence[Mapping[str, Any]] = ()  # state/monitor/check-*.json
    sim_to_real: Mapping[str, float] | None = None
    failure_analysis: Mapping[str, Any] | None = None
    interval_note: str = ""
    created: str = ""


def format_value(value: float, key: str = "") -> str:
    """How the page prints a number: AP-like metrics with 4 decimals, whole numbers as such,
    anything else with 4 significant digits."""
    value = float(value)
    if "AP" in key and "per_label" not in key:
        return f"{value:.4f}"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def metric_cell(key: str, value: float) -> str:
    return (f'<td class="num" data-metric="{_e(key)}" data-value="{float(value)!r}">'
            f"{format_value(value, key)}</td>")


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    """``rows`` hold ready HTML cells (``<td>...</td>``); ``head`` None: no header row."""
    top = "" if head is None else "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    return "<table>" + top + "".join("<tr>" + "".join(r) + "</tr>" for r in rows) + "</table>"


def _td(text: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _interval(pair: Sequence[float] | None) -> str:
    return f"[{pair[0]:.4f}, {pair[1]:.4f}]" if pair else "-"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def verdict_section(r: CycleRecords) -> str:
    g = r.gate
    if not g:
        return '<p class="verdict kept" id="verdict">no gate decision recorded for this cycle</p>'
    promoted = bool(g.get("promote"))
    head = (f"PROMOTED v{g.get('candidate_version')}" if promoted else
            f"kept champion v{g.get('champion_version_before')} "
            f"(candidate v{g.get('candidate_version')} not promoted)")
    return (f'<p class="verdict {"promoted" if promoted else "kept"}" id="verdict">'
            f"<b>{_e(head)}</b> by rule <code>{_e(g.get('rule', ''))}</code>: "
            f"{_e(g.get('reason', ''))}</p>")


def run_metrics_section(r: CycleRecords) -> str:
    order = sorted(r.run_metrics, key=lambda k: (not k.startswith("val_"), k))
    rows = [[_td(k), metric_cell(k, r.run_metrics[k]), _td(KNOWN.get(k, ""), "muted")]
            for k in order]
    return ("<h2>This cycle's MLflow run</h2>"
            f'<p class="muted">run <code>{_e(r.run_id)}</code>, every metric as logged</p>'
            + _table(["metric", "value", "meaning"], rows))


def curve_section(r: CycleRecords) -> str:
    points = [CurvePoint(h.cycle, {m: float(h.metrics[m]) for m in CURVE_METRICS
                                   if m in h.metrics}, dict(h.intervals), h.promoted)
              for h in r.history]
    rows = []
    for h in r.history:
        cells = [_td(h.cycle), _td(f"v{h.version}")]
        for m in CURVE_METRICS:
            value = h.metrics.get(m)
            cells += [_td("-" if value is None else format_value(value, m), "num"),
                      _td(_interval(h.intervals.get(m)), "num")]
        cells.append(_td("yes" if h.promoted else "no"))
        rows.append(cells)
    note = r.interval_note or "no bootstrap intervals"
    return ("<h2>AP and AP50 across cycles</h2>" + curve_svg(points)
            + f'<p class="muted">{_e(note)}</p>'
            + _table(["cycle", "model", "AP", "AP interval", "AP50", "AP50 interval",
                      "promoted"], rows))


def class_section(r: CycleRecords) -> str:
    drops = {d["name"]: d for d in r.gate.get("class_drops") or ()}
    current = r.history[-1].metrics if r.history else {}
    rows = []
    for name in r.class_names:
        d = drops.get(name, {})
        ap = current.get(f"AP_{name}", d.get("candidate"))
        interval = (d["lower"], d["upper"]) if d.get("lower") is not None else None
        rows.append([_td(name), _td("-" if ap is None or ap < 0 else f"{ap:.4f}", "num"),
                     _td("-" if d.get("champion") is None else f"{d['champion']:.4f}", "num"),
                     _td(_signed(d.get("drop")), "num"), _td(_interval(interval), "num"),
                     _td("REGRESSED" if d.get("regressed") else ("ok" if d else "-"))])
    return ("<h2>Per-class AP</h2><p class='muted'>drop = champion - candidate; the gate "
            "refuses a class that drops beyond <code>gate.max_class_drop</code></p>"
            + _table(["class", "candidate AP", "champion AP", "drop", "drop interval",
                      "check"], rows))


def gate_section(r: CycleRecords) -> str:
    g = r.gate
    iv = g.get("interval") or {}
    rows = [[_td("rule"), _td(g.get("rule", ""))],
            [_td("metric"), _td(g.get("metric", "AP"))],
            [_td("candidate"), _td(f"v{g.get('candidate_version')}")],
            [_td("champion before"), _td(g.get("champion_version_before") or "none")],
            [_td("candidate value"), _td(_plain(g.get("candidate_value")), "num")],
            [_td("champion value"), _td(_plain(g.get("champion_value")), "num")],
            [_td("gain"), _td(_signed(g.get("improvement")), "num")]]
    if iv:
        rows += [[_td(f"{iv['confidence']:.0%} interval of the gain"),
                  _td(f"[{iv['lower']:+.4f}, {iv['upper']:+.4f}]", "num")],
                 [_td("bootstrap"), _td(f"{iv['resamples']} paired resamples of "
                                        f"{iv['num_images']} images, seed {iv['seed']}, "
                                        f"{iv.get('seconds', 0):.1f} s")]]
    figure = (f'<img class="wide" alt="gate evidence: PR curves, bootstrap histogram, '
              f'per-class drops" src="{data_uri(r.gate_figure, "image/png")}">'
              if r.gate_figure else '<p class="muted">no gate figure (no predictions to '
                                    "plot)</p>")
    return "<h2>Gate decision and evidence</h2>" + _table(None, rows) + figure


def query_section(r: CycleRecords) -> str:
    q = r.query
    params = ", ".join(f"{k}={v}" for k, v in sorted((q.get("params") or {}).items()))
    head = (f"<p><b>{_e(q.get('strategy', '?'))}</b> ({_e(params)}), seed {_e(q.get('seed'))}, "
            f"scored by model v{_e(q.get('model_version'))} on pool "
            f"<code>{_e(str(q.get('pool_md5', ''))[:12])}</code>: "
            f"{len(q.get('image_ids') or ())} images chosen, "
            f"{len(q.get('new_label_ids') or ())} of them new labels</p>")
    figures = []
    for t in r.thumbnails:
        score = "" if t.score is None else f", score {t.score:.4g}"
        figures.append(f'<figure><img alt="queried image {t.image_id}" '
                       f'src="{data_uri(t.jpeg, "image/jpeg")}"><figcaption>image '
                       f"{t.image_id}{_e(score)}, {t.boxes} boxes"
                       f"{'' if t.new else ' (labelled before)'}</figcaption></figure>")
    more = (f'<p class="muted">{r.thumbnails_left_out} more images in the batch not shown</p>'
            if r.thumbnails_left_out else "")
    body = f'<div class="grid">{"".join(figures)}</div>' if figures else \
        '<p class="muted">no image of the batch could be shown</p>'
    # category ids are 1.. in class order (data/coco.py categories_for)
    key = "".join(f'<span class="key" style="border-color:{class_colour(i + 1)}"></span>{_e(n)}'
                  for i, n in enumerate(r.class_names))
    return ("<h2>Query batch (labels drawn)</h2>" + head + f'<p class="muted">boxes:{key}</p>'
            + body + more)


def label_value(r: CycleRecords, key: str) -> str:
    if key in r.run_metrics:
        return metric_cell(key, r.run_metrics[key])
    value = (r.label_cost or {}).get(key)
    if value is None:
        return _td(NOT_RECORDED, "muted")
    return f'<td class="num" data-record="{_e(key)}">{format_value(value, key)}</td>'


def label_section(r: CycleRecords) -> str:
    lab = r.label
    routes = ", ".join(f"{k}: {v}" for k, v in sorted((lab.get("routes") or {}).items()))
    rows = [[_td("labelled images after this cycle"), _td(lab.get("total", "-"), "num")],
            [_td("new labels this cycle"), _td(len(lab.get("new") or ()), "num")],
            [_td("oracle (images)"), _td(routes or lab.get("oracle", "-"))]]
    rows += [[_td(KNOWN[k]), label_value(r, k)] for k in LABEL_COST_KEYS]
    if r.label_cost:
        sat = r.label_cost.get("saturation") or {}
        rows += [[_td("how the seconds were counted"), _td(r.label_cost.get("source", "-"))],
                 [_td("stop rule"), _td(("SATURATED: " if r.label_cost.get("saturated")
                                         else "not saturated: ") + str(sat.get("reason", "")))]]
    return "<h2>Labels and label cost</h2>" + _table(None, rows)


def drift_section(r: CycleRecords) -> str:
    parts = ["<h2>Drift and the sim-to-real gap</h2>"]
    if not r.monitor_checks:
        parts.append('<p class="muted">no monitor check recorded since the previous cycle '
                     "(drift is measured by <code>synthloop monitor</code>)</p>")
    for rec in r.monitor_checks:
        drift = rec.get("drift") or {}
        decision = drift.get("decision") or {}
        trig = rec.get("trigger") or {}
        parts.append(f"<p>monitor check {_e(rec.get('time', ''))}: pool grew by "
                     f"{_e(rec.get('pool_growth', 0))} images; "
                     f"{_e(decision.get('reason', 'drift not measured'))}; trigger "
                     f"{'fired' if trig.get('fire') else 'did not fire'}</p>")
        checks = decision.get("checks") or ()
        if checks:
            parts.append(_table(["check", "method", "score", "threshold", "drifted"], [
                [_td(c["name"]), _td(c["method"]), _td(f"{c['score']:.4g}", "num"),
                 _td(f"{'>' if c['direction'] == 'above' else '<'} {c['threshold']:.4g}",
                     "num"), _td("DRIFT" if c.get("drifted") else "no")] for c in checks]))
    if r.sim_to_real:
        gap = sorted(r.sim_to_real.items())
        parts.append(_table(["sim-to-real gap", "value"],
                            [[_td(k), metric_cell(k, v)] for k, v in gap]))
    else:
        parts.append('<p class="muted" id="sim-to-real">sim-to-real gap: not measured in this '
                     "cycle</p>")
    return "".join(parts)


def failure_section(r: CycleRecords) -> str:
    if not r.failure_analysis:
        return ('<h2>Failure analysis</h2><p class="muted" id="failure-analysis">not enabled: '
                "no failure analysis changed the renderer's sampling in this cycle</p>")
    body = json.dumps(dict(r.failure_analysis), indent=2, sort_keys=True, default=str)
    changes = r.failure_analysis.get("changes")  # stages/steer.py: {variable: {from, to}}
    table = _table(["randomizer", "weights before (x uniform)", "weights now"], [
        [_td(k), _td(v["from"]), _td(v["to"])] for k, v in sorted(changes.items())]
        ) if changes else ""
    return f"<h2>Failure analysis</h2>{table}<pre id='failure-analysis'>{_e(body)}</pre>"


SECTIONS = (run_metrics_section, curve_section, class_section, gate_section, query_section,
            label_section, drift_section, failure_section)


def render_html(records: CycleRecords) -> str:
    """The whole page: no external asset, no script."""
    title = f"{records.pipeline}: cycle {records.cycle}"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class='muted'>cycle report, made "
            f"{_e(records.created)}</p>" + verdict_section(records)
            + "".join(section(records) for section in SECTIONS) + "</body></html>\n")
