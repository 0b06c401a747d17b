"""Latent Explorer tab. Until the VAE lands it maps the corpus in the analyzer's own space, which is what the
VAE's UMAP of latents will be coloured by; hovering a point shows its segment number, which opens it."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from engines.api import MODE_COLORS, MODES, RANGE_FILTERS, StudioEngine
from studio.widgets import analysis_markdown, guarded, piano_roll_figure

AXIS_CHOICES = list(RANGE_FILTERS)  # every analyzer value the engine can place segments by


def corpus_map(engine: StudioEngine, x_axis: str, y_axis: str) -> go.Figure:
    points = engine.axis_points(x_axis, y_axis)
    fig = go.Figure()
    for mode in MODES:
        idx = [i for i, m in enumerate(points["mode"]) if m == mode]
        fig.add_trace(go.Scattergl(
            x=[points["x"][i] for i in idx], y=[points["y"][i] for i in idx], mode="markers", name=mode,
            marker=dict(color=MODE_COLORS[mode], size=5, opacity=0.7),
            customdata=[points["index"][i] for i in idx],
            hovertemplate=f"{mode} · segment %{{customdata}}<extra></extra>"))
    fig.update_layout(height=520, xaxis_title=x_axis, yaxis_title=y_axis, margin=dict(l=40, r=10, t=10, b=40),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def build_latent_tab(engine: StudioEngine) -> None:
    gr.Markdown(
        "**The latent map arrives with the VAE engine.** Then this tab shows a UMAP of the corpus latents, "
        "interpolation strips between two picked points, decoding of any place on the map, and attribute "
        "arithmetic (rebracketing, temporal complexity, each emotion axis, towards a mode).\n\n"
        "Meanwhile, here is the corpus placed by the chromatic analyzer itself: every dot is a 4-bar segment, "
        "coloured by its mode. Type a segment number from the map to open it.")
    with gr.Row():
        x_axis = gr.Dropdown(AXIS_CHOICES, value="energy", label="x")
        y_axis = gr.Dropdown(AXIS_CHOICES, value="valence", label="y")
        index = gr.Number(label="Segment number", precision=0, minimum=0)
        open_button = gr.Button("Open segment")
    plot = gr.Plot(value=corpus_map(engine, "energy", "valence"), label="Corpus by analyzer axes")
    with gr.Row():
        roll = gr.Plot(label="Piano roll")
        with gr.Column():
            audio = gr.Audio(type="filepath", interactive=False, label="Listen")
            readout = gr.Markdown()

    def redraw(x, y):
        return corpus_map(engine, x, y)

    @guarded(lambda message: (None, None, message))
    def open_segment(i):
        view = engine.segment_view(int(i or 0))
        return (piano_roll_figure(view.notes, view.title, view.color), engine.render_segment(view.index),
                analysis_markdown(view.analysis, view.color, view.facts))

    x_axis.change(redraw, [x_axis, y_axis], plot)
    y_axis.change(redraw, [x_axis, y_axis], plot)
    open_button.click(open_segment, index, [roll, audio, readout])
