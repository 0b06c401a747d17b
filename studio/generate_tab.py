"""Generate tab: new segments from the trained engines (studio/generation_panel.py), the corpus browser
(filter, pick, see, hear, download) and "analyse your own MIDI".
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engines.api import AXES, MODE_COLORS, MODES, BrowseQuery, StudioEngine
from engines.errors import StudioError
from studio.generation_panel import build_generation_panel
from studio.widgets import analysis_markdown, counted, guarded, piano_roll_figure

TABLE_COLUMNS = ["index", "piece", "collection", "bars", "time_signature", "mode", "key", "rebracketing",
                 "temporal_complexity", "energy", "valence", "tension", "intimacy", "motion"]
UPLOAD_COLUMNS = ["bars", "mode", "key", "energy", "valence", "tension", "intimacy", "motion", "rebracketing",
                  "temporal_complexity"]


def build_generate_tab(engine: StudioEngine) -> None:
    page = engine.cfg.studio.browser_page_size
    gr.Markdown("Generate segments by chromatic mode with the VAE, the diffusion engine or the GPT (each result "
                "checked: the judge picks the best of several candidates, never a copy of a corpus tune), browse "
                "the bundled corpus, or drop in your own MIDI to hear and read its analysis.")
    with gr.Tabs(overflow_behavior="wrap", elem_id="generate-tabs"):   # at phone width: rows, not a "⋯" menu
        with gr.Tab("New segments", id="generate-panel"):
            build_generation_panel(engine)
        with gr.Tab("Corpus browser"):
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    modes = gr.CheckboxGroup(list(MODES), label="Modes (none = all)", elem_id="filter-modes")
                    collections = gr.Dropdown(engine.collections(), multiselect=True, label="Collections (none = all)")
                    split = gr.Radio(["all", "train", "validation", "test"], value="all", label="Split")
                    text = gr.Textbox(label="Piece contains", placeholder="e.g. bwv, Kyrie, reel")
                    with gr.Accordion("Attribute ranges", open=False):
                        reb = (gr.Slider(0, 1, 0, step=0.05, label="Rebracketing ≥"),
                               gr.Slider(0, 1, 1, step=0.05, label="Rebracketing ≤"))
                        tc = (gr.Slider(0, 1, 0, step=0.05, label="Temporal complexity ≥"),
                              gr.Slider(0, 1, 1, step=0.05, label="Temporal complexity ≤"))
                        axis = gr.Dropdown(list(AXES), value="energy", label="Emotion axis")
                        axis_range = (gr.Slider(-1, 1, -1, step=0.05, label="Axis ≥"),
                                      gr.Slider(-1, 1, 1, step=0.05, label="Axis ≤"))
                    with gr.Row():
                        search = gr.Button("Search", variant="primary", elem_id="browse-search")
                        lucky = gr.Button("Random segment", elem_id="browse-random")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="browse-status")
                    table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, max_height=300,
                                         elem_id="browse-table", label="Segments (click a row)")
            with gr.Row():
                with gr.Column(scale=3):
                    roll = gr.Plot(label="Piano roll", elem_id="segment-roll")
                    audio = gr.Audio(label="Listen", type="filepath", interactive=False, elem_id="segment-audio")
                with gr.Column(scale=2):
                    readout = gr.Markdown(elem_id="segment-readout")
                    scores = gr.Label(label="Mode scores", num_top_classes=len(MODES))
                    files = gr.File(label="Download MIDI and WAV", file_count="multiple", interactive=False)
            query_state = gr.State(BrowseQuery())  # this user's last search, for "Random segment"

            filters = [modes, collections, split, text, *reb, *tc, axis, *axis_range]
            outputs = [roll, audio, files, readout, scores]

            def make_query(modes, collections, split, text, reb_lo, reb_hi, tc_lo, tc_hi, axis, ax_lo, ax_hi):
                return BrowseQuery(modes=modes or [], collections=collections or [], split=split, text=text or "",
                                   ranges={"rebracketing": (reb_lo, reb_hi), "temporal_complexity": (tc_lo, tc_hi),
                                           axis: (ax_lo, ax_hi)}, limit=page)

            @guarded(lambda message: ([], message, BrowseQuery()))
            def run_search(*values):
                query = make_query(*values)
                rows, total = engine.browse(query)
                shown = f"showing the first {len(rows)}" if total > len(rows) else "showing all"
                return [[r[c] for c in TABLE_COLUMNS] for r in rows], f"**{total:,}** segments match; {shown}.", query

            @guarded(lambda message: (None, None, [], message, None))
            def show(index):
                view = engine.segment_view(int(index))
                wav = engine.render_segment(int(index))
                fig = piano_roll_figure(view.notes, view.title, view.color)
                return fig, wav, [view.midi_path, wav], analysis_markdown(view.analysis, view.color, view.facts), \
                    view.analysis["scores"]

            def on_select(evt: gr.SelectData):
                if not evt.row_value:
                    return None, None, [], "", None
                return show(evt.row_value[0])

            @guarded(lambda message: (None, None, [], message, None))
            def random_pick(query):
                return show(engine.random_match(query))

            search.click(run_search, filters, [table, status, query_state], api_visibility="private")
            table.select(on_select, None, outputs, api_visibility="private")
            lucky.click(random_pick, query_state, outputs, api_visibility="private")

        with gr.Tab("Your MIDI"):
            limits = engine.cfg.data
            gr.Markdown(f"Upload a `.mid` file (up to {limits.max_file_mb:g} MB and {limits.max_notes:,} notes; "
                        f"of a longer piece the first {limits.max_seconds / 60:g} minutes are analysed). It is cut "
                        f"into segments of {limits.segment_bars} bars, each analysed and coloured by its mode.")
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label="MIDI file", file_types=[".mid", ".midi"], type="filepath",
                                     elem_id="upload-midi")
                    upload_track = gr.Dropdown([], label="Analyse", visible=False, elem_id="upload-track",
                                               info="a file of several tracks: all merged, its melody, or one track")
                    upload_error = gr.Markdown(elem_id="upload-error")
                    upload_files = gr.File(label="Download", file_count="multiple", interactive=False)
                with gr.Column(scale=3):
                    upload_roll = gr.Plot(label="Piano roll by segment", elem_id="upload-roll")
                    upload_audio = gr.Audio(label="Listen", type="filepath", interactive=False, elem_id="upload-audio")
            upload_table = gr.Dataframe(headers=UPLOAD_COLUMNS, interactive=False, elem_id="upload-table",
                                        label="Analysis per segment")

            @guarded(lambda message: (None, None, [], [], message, gr.skip()))
            def analyze_upload(path, track="all"):
                if not path:
                    return None, None, [], [], "", gr.update(choices=[], value=None, visible=False)
                try:
                    view = engine.analyze_upload(path, track or "all")
                except StudioError:
                    if not track or track == "all":
                        # a refused upload is not kept in (nor served from) the cache
                        Path(path).unlink(missing_ok=True)
                    raise
                rows = [[f"{a['bars'][0]}-{a['bars'][1]}", a["mode"], a["key"],
                         *[round(a["axes"][x], 2) for x in AXES], round(a["rebracketing"], 2),
                         round(a["temporal_complexity"], 2)] for a in view.segments]
                modes = ", ".join(sorted({a["mode"] for a in view.segments}))
                analysed = dict((value, label) for label, value in view.tracks).get(view.track, view.track)
                title = f"{view.name} · {analysed} · {counted(len(view.segments), 'segment')} · {modes}"
                fig = piano_roll_figure(view.notes, title, MODE_COLORS["WHITE"])
                choices = gr.update(choices=view.tracks, value=view.track, visible=len(view.tracks) > 1)
                return (fig, view.wav_path, [view.midi_path, view.wav_path], rows, view.excerpt and f"*{view.excerpt}*",
                        choices)

            upload_outputs = [upload_roll, upload_audio, upload_files, upload_table, upload_error, upload_track]
            upload.change(analyze_upload, upload, upload_outputs, api_visibility="private")
            upload_track.input(analyze_upload, [upload, upload_track], upload_outputs, api_visibility="private")
