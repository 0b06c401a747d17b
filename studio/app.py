"""Assembles the studio: one tab per file, all sharing one StudioEngine."""
from __future__ import annotations

import gradio as gr

from engines.api import StudioEngine
from studio.arrange_tab import ARRANGE_CSS, build_arrange_tab
from studio.evaluate_tab import build_evaluate_tab
from studio.generate_tab import build_generate_tab
from studio.generation_api import build_generation_api
from studio.latent_tab import MAP_CLICK_JS, build_latent_tab
from studio.phrase_pad import PHRASE_CSS, PHRASE_JS
from studio.widgets import PLAYHEAD_JS
from studio.listening_tab import build_listening_tab

CACHE_SWEEP = (3600, 86400)   # (every N seconds, remove cached files older than M seconds)
CSS = """
.studio-error {background:#fdecea;border:1px solid #f5c2c0;color:#8a1c1c;padding:10px 12px;border-radius:8px}
.mode-chip {display:inline-block}
.studio-hidden {display:none !important}
#generate-live canvas {width: 100%; image-rendering: pixelated; display: none}
#generate-live .live-caption {display: none; font-size: var(--text-sm); color: var(--body-text-color-subdued)}
#generate-live:has(canvas[data-drawn]) .live-caption {display: block}
.result-card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 8px}
/* the dark theme: plot text lifted (figures are transparent, studio/widgets.STUDIO_TEMPLATE) */
.dark .js-plotly-plot .main-svg .xtick text, .dark .js-plotly-plot .main-svg .ytick text,
.dark .js-plotly-plot .main-svg .gtitle, .dark .js-plotly-plot .main-svg .xtitle,
.dark .js-plotly-plot .main-svg .ytitle, .dark .js-plotly-plot .main-svg .legendtext {fill: #d1d5db !important}
/* readouts and tables: a word never breaks inside; a table too wide for a phone scrolls sideways */
.prose table {display: block; max-width: 100%; overflow-x: auto}
.prose th, .prose td {white-space: nowrap; word-break: keep-all; overflow-wrap: normal}
"""


def build_app(engine: StudioEngine) -> gr.Blocks:
    # Gradio's cache (uploads, and the copies of every file a handler returns) is swept hourly of files older
    # than a day: a rater who paused keeps their pair that long, and a resume serves it afresh.
    with gr.Blocks(title="Chromatic Segment Studio", analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown("# Chromatic Segment Studio")
        # at phone width the tabs wrap onto a second row: behind a "⋯" menu a musician did not find them
        with gr.Tabs(elem_id="studio-tabs", overflow_behavior="wrap") as studio_tabs:
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(engine)
            with gr.Tab("Latent Explorer", id="latent"):
                build_latent_tab(engine)
            with gr.Tab("Arrange", id="arrange"):
                build_arrange_tab(engine)
            with gr.Tab("Evaluate", id="evaluate"):
                build_evaluate_tab(engine)
            with gr.Tab("Listen", id="listen"):
                open_from_link, linked = build_listening_tab(engine)
        demo.load(open_from_link, None, [studio_tabs, *linked], api_visibility="private")
        build_generation_api(engine)
    return demo


def launch(engine: StudioEngine, host: str, port: int, share: bool = False, block: bool = True, after_build=None):
    """Build and serve the studio. `after_build()` runs once the UI is built, before serving: a background
    warm-up started there no longer races the UI build through the import system (two threads importing
    the same modules at once can deadlock in importlib)."""
    demo = build_app(engine)
    if after_build is not None:
        after_build()
    demo.queue(default_concurrency_limit=4)
    return demo.launch(server_name=host, server_port=port, share=share, theme=gr.themes.Soft(),
                       css=CSS + PHRASE_CSS + ARRANGE_CSS,
                       head=MAP_CLICK_JS + PHRASE_JS + PLAYHEAD_JS,
                       # a little above the engine's own limit, so oversized files get the engine's clear message
                       max_file_size=f"{int(engine.cfg.data.max_file_mb * 1.5) + 1}mb",
                       prevent_thread_lock=not block,
                       # the studio's own renders only: never the listening stimuli folder (a rater is handed copies
                       # of the pair they are answering) nor the private database
                       allowed_paths=[str(engine.out_dir)],
                       footer_links=["api"])
