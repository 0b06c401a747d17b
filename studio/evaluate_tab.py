"""Evaluate tab: run the shared evaluation suite (engines/evaluation/suite.py, report.py) on one or more engines
and on held-out real segments, with progress and Stop; then their headline numbers side by side and, for the
one picked under "Details of", the per-mode table, the requested-vs-heard confusion
matrix, real-vs-generated histograms of each musical statistic, the Fréchet distance with its real baseline,
the best and worst examples to hear, and the report as JSON and CSV. Below: the corpus the numbers are
measured against, by mode, collection and split."""
from __future__ import annotations

import json

import gradio as gr
import plotly.graph_objects as go

from engines.api import MODE_COLORS, MODES, StudioEngine
from engines.errors import StudioError
from studio.widgets import counted, error_markdown, guarded, guarded_stream, progress_html

MODE_COLUMNS = ["mode", "samples", "analyzer", "judge", "intra_class_variance", "mean_pairwise_distance"]
EXAMPLE_SLOTS = 4  # best 2, worst 2


def confusion_figure(confusion: list[list[int]]) -> go.Figure:
    figure = go.Figure(go.Heatmap(z=confusion, x=list(MODES), y=list(MODES), colorscale="Blues",
                                  text=confusion, texttemplate="%{text}", hovertemplate="asked %{y}, heard %{x}: %{z}"))
    figure.update_layout(height=380, margin=dict(l=70, r=10, t=40, b=60), title="Asked (rows) vs heard by the analyzer",
                         yaxis=dict(autorange="reversed"))
    return figure


def histogram_figure(reports: dict, name: str) -> go.Figure:
    """reports: {engine: finished report}: the real values of statistic `name` once, each engine's over them."""
    figure = go.Figure()
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    for k, (which, report) in enumerate((reports or {}).items()):
        values = report["statistics"].get(name, {})
        if k == 0:
            figure.add_trace(go.Histogram(x=values.get("real", []), name="real (test split)", opacity=0.55,
                                          histnorm="probability density", marker_color="#7f7f7f"))
        label = "real (validation, as an engine)" if which == "real" else which
        figure.add_trace(go.Histogram(x=values.get("generated", []), name=label, opacity=0.55,
                                      histnorm="probability density", marker_color=colors[k % len(colors)]))
    figure.update_layout(barmode="overlay", height=300, margin=dict(l=40, r=10, t=40, b=30),
                         title=f"{name.replace('_', ' ')}: real vs generated")
    return figure


RELIABLE_FRECHET_N = 160   # segments: 20 per mode, what the shipped evaluations use


def summary_markdown(report: dict) -> str:
    suite = report["suite"]
    f = suite["frechet"]
    analyzer = suite["analyzer"]["consistency"]["overall"]
    judge = suite["judge"].get("consistency", {}).get("overall") if "consistency" in suite["judge"] else None
    copies = suite["diversity"]["copies"]
    overall = suite["diversity"]["per_mode"]["overall"]
    lines = [f"### {report['engine'].upper()}: {counted(report['n'], 'segment')}",
             f"- **Fréchet distance** {f['distance']:.3f} (95 % interval {f['interval'][0]:.3f}–{f['interval'][1]:.3f}); "
             f"real-vs-real baseline {f['real_baseline']:.3f} · embedding: {f['embedding']}",
             f"- **Mode consistency**: analyzer {analyzer:.0%}" + (f", learned judge {judge:.0%}" if judge is not None
                                                                    else " (no judge checkpoint)"),
             f"- **Diversity**: mean pairwise distance {overall['mean_pairwise_distance']} · near copies of training "
             f"segments {copies['near_copy_rate']:.0%}"
             + (f" (of a rare one, not a corpus idiom: {copies['rare_near_copy_rate']:.0%})"
                if copies.get("rare_near_copy_rate") is not None else "")
             + f", duplicates {copies['duplicate_rate']:.0%}",
             "- **Musical statistics overlap with real**: " + ", ".join(
                 f"{k.replace('_', ' ')} {v['overlap']:.2f}" for k, v in suite["music_stats"].items()
                 if v["overlap"] is not None)]
    if report["n"] < RELIABLE_FRECHET_N:
        lines.insert(2, f"  - *With {counted(report['n'], 'segment')} the Fréchet distance and its baseline are "
                        f"mostly sampling noise (a Fréchet estimate is biased upward when there are fewer samples "
                        f"than embedding dimensions): compare engines at {RELIABLE_FRECHET_N // 8} per mode "
                        f"or more.*")
    return "\n".join(lines)


def build_evaluate_tab(engine: StudioEngine) -> None:
    stats = engine.corpus_summary()
    gr.Markdown("Measure engines the way every engine is measured: samples per mode with the studio's "
                "default settings (or yours) against held-out real segments. Pick several to see them side by "
                "side. **Real** runs held-out corpus segments through the same suite: the numbers to compare with.")
    available = engine.engines_available()
    with gr.Row():
        which = gr.Dropdown(available + ["real"], value=[(available or ["real"])[0]], multiselect=True,
                            label="Engines", elem_id="evaluate-engine")
        per_mode = gr.Slider(2, 32, 6, step=1, label="Samples per mode", elem_id="evaluate-n")
        settings = gr.Textbox(value="{}", label="Settings (JSON of generation.sampling keys: shared ones, or an "
                                                "engine's section; \"candidates\": K evaluates verified results)",
                              placeholder='{"temperature": 0.9, "autoregressive": {"prompt_guidance": 2}, '
                                          '"candidates": 8}', elem_id="evaluate-settings")
        run = gr.Button("Run evaluation", variant="primary", elem_id="evaluate-run")
        stop = gr.Button("Stop", elem_id="evaluate-stop")
    status = gr.HTML(elem_id="evaluate-status")
    comparison = gr.Dataframe(headers=["", "engine"], interactive=False, label="Side by side",
                              elem_id="evaluate-comparison")
    detail = gr.Dropdown([], label="Details of", elem_id="evaluate-detail")
    summary = gr.Markdown(elem_id="evaluate-summary")
    table = gr.Dataframe(headers=MODE_COLUMNS, interactive=False, label="Per mode", elem_id="evaluate-modes")
    with gr.Row():
        confusion = gr.Plot(label="Confusion", elem_id="evaluate-confusion")
        with gr.Column():
            statistic = gr.Dropdown(["pitch_class_entropy", "scale_consistency", "groove_consistency",
                                     "empty_beat_rate", "polyphony", "pitch_range"], value="pitch_range",
                                    label="Statistic", elem_id="evaluate-statistic")
            histogram = gr.Plot(label="Real vs generated", elem_id="evaluate-histogram")
    captions, examples = [], []
    with gr.Row(elem_id="evaluate-examples"):
        for i in range(EXAMPLE_SLOTS):   # a caption that wraps above each player: a label would be cut off
            with gr.Column(min_width=220):
                captions.append(gr.Markdown(f"example {i + 1}", elem_id=f"evaluate-example-label-{i}"))
                examples.append(gr.Audio(show_label=False, type="filepath", interactive=False,
                                         elem_id=f"evaluate-example-{i}"))
    files = gr.File(label="Reports (JSON, CSV)", file_count="multiple", interactive=False, elem_id="evaluate-files")
    reports_state = gr.State({})   # engine -> finished report (as evaluate_stream gave it)
    details = [summary, table, confusion, *captions, *examples]
    outputs = [status, comparison, detail, histogram, files, reports_state, *details]

    def detail_view(report: dict) -> list:
        shown = report["examples"]["best"] + report["examples"]["worst"]
        titles = [f"**{x['title']}**" for x in shown[:EXAMPLE_SLOTS]] + ["—"] * (EXAMPLE_SLOTS - len(shown))
        audio = [x["wav"] for x in shown[:EXAMPLE_SLOTS]] + [None] * (EXAMPLE_SLOTS - len(shown))
        rows = [[r[c] for c in MODE_COLUMNS] for r in report["per_mode"]]
        return [summary_markdown(report), rows, confusion_figure(report["confusion"]), *titles, *audio]

    def _failed(message):
        return [message, *[gr.skip()] * (len(outputs) - 1)]

    @guarded_stream(_failed)
    def on_run(names, n, settings_text, statistic_name, request: gr.Request):
        names = [names] if isinstance(names, str) else list(names or [])
        if not names:
            raise StudioError("pick at least one engine (or real) to evaluate")
        run_id = f"evaluate-{request.session_hash}" if request is not None else None
        try:
            overrides = json.loads((settings_text or "").strip() or "{}")
        except json.JSONDecodeError as exc:
            raise StudioError(f"settings must be JSON, e.g. {{\"temperature\": 0.9}} ({exc.msg})") from None
        if not isinstance(overrides, dict):
            raise StudioError("settings must be a JSON object of generation.sampling keys")
        reports: dict = {}
        for k, name in enumerate(names):
            for update in engine.evaluate_stream(name, int(n), run_id=run_id, settings=overrides):
                if update[0] == "progress":
                    _, done, total, mode = update
                    yield [progress_html(k * total + done, len(names) * total,
                                         f"{name}: sampling {mode} (mode {done + 1} of {total}; engine {k + 1} "
                                         f"of {len(names)})"), *[gr.skip()] * (len(outputs) - 1)]
                    continue
                reports[name] = update[1]
            headers, body = engine.evaluation_comparison(list(reports.values()))
            last = k == len(names) - 1
            yield ["" if last else progress_html((k + 1), len(names), f"{name} done"),
                   gr.update(value=body, headers=headers), gr.update(choices=list(reports), value=name),
                   histogram_figure(reports, statistic_name),
                   [f for r in reports.values() for f in r["files"]], dict(reports), *detail_view(reports[name])]
            if reports[name]["stopped"]:
                yield [error_markdown(f"Stopped after {name}."), *[gr.skip()] * (len(outputs) - 1)]
                return

    def on_detail(name, reports):
        if not name or name not in (reports or {}):
            return [gr.skip()] * len(details)
        return detail_view(reports[name])

    def on_stop(request: gr.Request):
        if request is None or not engine.request_stop(f"evaluate-{request.session_hash}"):
            return error_markdown("No evaluation is running.")
        return progress_html(1, 1, "Stopping after this mode…")

    run.click(on_run, [which, per_mode, settings, statistic], outputs, api_visibility="private")
    stop.click(on_stop, None, status, queue=False, api_visibility="private")
    detail.input(guarded(lambda message: [gr.skip()] * len(details))(on_detail), [detail, reports_state], details,
                  api_visibility="private")
    statistic.change(guarded(lambda message: gr.skip())(histogram_figure), [reports_state, statistic], histogram,
                     api_visibility="private")
    gr.Markdown("### The corpus")
    gr.Markdown(f"**{stats['segments']:,}** segments from **{stats['pieces']:,}** pieces · splits: " +
                ", ".join(f"{k} {v:,}" for k, v in stats["splits"].items()), elem_id="corpus-summary")
    modes = go.Figure(go.Bar(x=list(MODES), y=[stats["modes"][m] for m in MODES],
                             marker_color=[MODE_COLORS[m] for m in MODES],
                             text=[f"{stats['mode_shares'][m]:.1%}" for m in MODES], textposition="outside"))
    modes.update_layout(height=320, margin=dict(l=40, r=10, t=30, b=30), title="Segments per chromatic mode")
    top = sorted(stats["collections"].items(), key=lambda kv: -kv[1])
    collections = go.Figure(go.Bar(x=[k for k, _ in top], y=[v for _, v in top], marker_color="#7f7f7f"))
    collections.update_layout(height=320, margin=dict(l=40, r=10, t=30, b=80), title="Segments per collection")
    with gr.Row():
        gr.Plot(modes)
        gr.Plot(collections)
