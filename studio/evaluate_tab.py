"""Evaluate tab. Engine evaluations and A/B listening sessions arrive with the evaluation issue; until then it
shows the real-data baseline every evaluation is measured against: the corpus by mode, collection and split."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from engines.api import MODE_COLORS, MODES, StudioEngine


def build_evaluate_tab(engine: StudioEngine) -> None:
    stats = engine.corpus_summary()
    gr.Markdown(
        "**Evaluations arrive with the engines.** This tab will run consistency, Fréchet distance, diversity "
        "and musical statistics for each engine against held-out real segments, and host blinded A/B "
        "listening sessions. Below is the real-data baseline those numbers are compared with.")
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
