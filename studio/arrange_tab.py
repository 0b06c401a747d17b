"""Arrange tab: a piece drawn as a timeline of section cards (mode, bars, engine), written section by section
along that path of modes (engines/api/arrange.py), then one roll, the audio, the report and the files; any
section can be regenerated while the others stay. Plans load from the shipped examples or a JSON file and
save as one. How sections are written and joined: docs/arrange.md."""
from __future__ import annotations

import gradio as gr

from engines.api import METRE_NAMES, MODE_COLORS, MODES, SECTION_BARS, WHITE, StudioEngine
from engines.errors import StudioError
from engines.music.features import PITCH_NAMES
from studio.widgets import counted, error_markdown, guarded, guarded_stream, mode_chip, piano_roll_figure, progress_html

MAX_CARDS = 8           # sections the timeline shows (a plan file may hold up to 16: the CLI writes those)
KEYS = [("as written", "")] + [(f"{p} {scale}", f"{p} {scale}") for p in PITCH_NAMES for scale in ("major", "minor")]
ARRANGE_CSS = """
#arrange-timeline {flex-wrap: wrap; gap: 8px}
.section-card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 6px; min-width: 190px}
.section-head {border-left: 6px solid var(--section-color); padding-left: 8px; line-height: 1.6}
"""


def default_sections(engines: list[str]) -> list[dict]:
    """What the timeline starts with: BLUE, RED, VIOLET, four bars each, by the first engine installed."""
    engine = "diffusion" if "diffusion" in engines else (engines or ["diffusion"])[0]
    return [{"bars": 4, "mode": mode, "engine": engine} for mode in ("BLUE", "RED", "VIOLET")]


def plan_values(title: str, tempo, key: str, metre: str, sections: list[dict]) -> dict:
    """The timeline and the piece's settings -> plan values, as a plan file holds them."""
    values = {"tempo": float(tempo) if tempo else None, "key": key or None, "metre": metre or None,
              "sections": [dict(s) for s in sections]}
    if title:
        values["title"] = title
    return {k: v for k, v in values.items() if v is not None}


def section_head(number: int, section: dict, short_names: dict, written: dict | None) -> str:
    """A card's heading: its number and mode chip, bars and engine, any targets it sets, and once written
    what the analyzer hears in it."""
    mode = section.get("mode", WHITE)
    color = MODE_COLORS.get(mode, MODE_COLORS[WHITE])
    lines = [f"<b>{number}</b> &nbsp;{mode_chip(mode, color)} &nbsp;{section['bars']} bars · "
             f"{short_names.get(section['engine'], section['engine'])}"]
    targets = [f"{name} {value:g}" for name, value in (section.get("axes") or {}).items()]
    targets += [f"{name.replace('_', ' ')} {section[name]:g}" for name in ("rebracketing", "temporal_complexity")
                if section.get(name) is not None]
    extra = [section[k] for k in ("key", "metre") if section.get(k)]
    if section.get("tempo"):
        extra.append(f"{section['tempo']:g} BPM")
    if targets or extra:
        lines.append(f"<small>{' · '.join(targets + extra)}</small>")
    if written:
        heard = written["heard"] or WHITE
        mark = "✓" if heard == mode or mode == WHITE else "✗"
        lines.append(f"<small>heard {mode_chip(heard, MODE_COLORS[heard])} {mark} · {written['seconds']:.1f} s</small>")
    return f"<div class='section-head' style='--section-color:{color}'>{'<br>'.join(lines)}</div>"


def written_sections(sections: list[dict], arrangement) -> dict[int, dict]:
    """{card index: section view} for the cards the written piece still matches (asked mode, engine, bars)."""
    if arrangement is None:
        return {}
    out = {}
    for i, (card, written) in enumerate(zip(sections, arrangement.sections)):
        asked = (card.get("mode", WHITE), card["engine"], card["bars"])
        if asked == (written["asked"], written["engine"], written["bars"]):
            out[i] = written
    return out


def regenerable(index: int, arrangement) -> bool:
    """Whether card `index` can be regenerated: a piece is written and has that section (edited or not: the
    engine says when the rest of the timeline no longer matches the piece)."""
    return arrangement is not None and index < len(arrangement.sections)


def report_markdown(view) -> str:
    """Per section what was asked and heard; per join how far the analyzer's axes and the note density move,
    beside the corpus's own median at a phrase boundary."""
    sections = view.sections
    heard_as_asked = sum(s["heard"] == s["asked"] or s["asked"] == WHITE for s in sections)
    bars = sum(s["bars"] for s in sections)
    lines = [f"**{counted(bars, 'bar')}** in {counted(len(sections), 'section')}, {view.seconds:.1f} s"
             + (f" (regenerated {counted(view.regenerations, 'time')})" if view.regenerations else "")
             + f" · heard as asked: {heard_as_asked} of {len(sections)} · seed {view.seed}",
             "", "| section | asked | heard | bars | metre | engine | seconds |", "|---|---|---|---:|---|---|---:|"]
    for s in sections:
        lines.append(f"| {s['number']} | {s['asked']} | {s['heard'] or 'silence'} | {s['bars']} | {s['metre']} | "
                     f"{s['engine']} | {s['seconds']:.1f} |")
    if view.joins:
        corpus = view.corpus_joins
        lines += ["", "| join | axes jump | note-density jump (notes per quarter) |", "|---|---:|---:|"]
        for j in view.joins:
            lines.append(f"| {j['after_section']} → {j['after_section'] + 1} | {j['axis_jump']:.3f} | "
                         f"{j['density_jump']:.2f} |")
        lines.append(f"| *real music at a phrase boundary (median of {corpus['pairs']})* | "
                     f"*{corpus['axis_jump']['median']:.3f}* | *{corpus['density_jump']['median']:.2f}* |")
    if view.stopped:
        lines.append("\n*Stopped: the sections after these were not written.*")
    return "\n".join(lines)


def build_arrange_tab(engine: StudioEngine) -> None:
    available = engine.engines_available()
    short_names = {name: engine.engine_short_name(name) for name in available}
    examples = engine.example_plans()
    gr.Markdown("Draw a path of modes and get a piece that follows it: each card is a section of 4, 8 or 16 bars "
                "with its mode and engine. Sections are written in order, each one's first bars answering the last "
                "bars of the one before, and every 4-bar window is checked like any generation. Regenerate a "
                "single section when one is not right: the others stay, and its joins are written again.")
    with gr.Row():
        example = gr.Dropdown([(v.get("title", k), k) for k, v in examples.items()], value=None,
                              label="Start from an example plan", elem_id="arrange-example")
        upload = gr.File(label="Load a plan (JSON)", file_types=[".json"], type="filepath", elem_id="arrange-upload",
                         height=130)
        title = gr.Textbox(label="Title", placeholder="e.g. From BLUE to RED", elem_id="arrange-title")
    with gr.Row():
        tempo = gr.Number(0, precision=0, label="Tempo (BPM 30-300; 0: each engine's)", elem_id="arrange-tempo")
        key = gr.Dropdown(KEYS, value="", allow_custom_value=True, label="Key", elem_id="arrange-key")
        metre = gr.Dropdown([("as generated", "")] + [(m, m) for m in METRE_NAMES], value="", label="Metre",
                            elem_id="arrange-metre")
        seed = gr.Number(0, precision=0, label="Seed", elem_id="arrange-seed")
        candidates = gr.Slider(0, 32, 0, step=1, label="Candidates per window", elem_id="arrange-candidates",
                               info="0: each engine's own; 1: the raw model", scale=2)
    cards = []
    initial = default_sections(available)
    with gr.Row(elem_id="arrange-timeline"):
        for i in range(MAX_CARDS):
            start = initial[i] if i < len(initial) else initial[-1]
            with gr.Column(visible=i < len(initial), min_width=190, elem_classes="section-card",
                           elem_id=f"arrange-card-{i}") as box:
                head = gr.HTML(section_head(i + 1, start, short_names, None), elem_id=f"arrange-card-{i}-head")
                mode = gr.Dropdown(list(MODES) + [WHITE], value=start["mode"], label="Mode",
                                   elem_id=f"arrange-card-{i}-mode")
                bars = gr.Radio(list(SECTION_BARS), value=start["bars"], label="Bars", elem_id=f"arrange-card-{i}-bars")
                which = gr.Dropdown([(short_names[e], e) for e in available], value=start["engine"], label="Engine",
                                    elem_id=f"arrange-card-{i}-engine")
                with gr.Row():
                    left = gr.Button("◀", size="sm", min_width=40, interactive=i > 0, elem_id=f"arrange-card-{i}-left")
                    right = gr.Button("▶", size="sm", min_width=40, interactive=i < len(initial) - 1,
                                      elem_id=f"arrange-card-{i}-right")
                    remove = gr.Button("✕", size="sm", min_width=40, elem_id=f"arrange-card-{i}-remove")
                regenerate = gr.Button("Regenerate", size="sm", interactive=False,
                                       elem_id=f"arrange-card-{i}-regenerate")
            cards.append({"box": box, "head": head, "mode": mode, "bars": bars, "engine": which, "left": left,
                          "right": right, "remove": remove, "regenerate": regenerate})
    with gr.Row():
        add = gr.Button("+ Add section", elem_id="arrange-add")
        run = gr.Button("Generate piece", variant="primary", elem_id="arrange-run")
        stop = gr.Button("Stop", elem_id="arrange-stop")
        save = gr.Button("Save plan", elem_id="arrange-save")
    status = gr.HTML(elem_id="arrange-status")
    roll = gr.Plot(label="The piece", elem_id="arrange-roll")
    audio = gr.Audio(label="Listen", type="filepath", interactive=False, elem_id="arrange-audio")
    with gr.Row():
        report = gr.Markdown(elem_id="arrange-report")
        files = gr.File(label="Download (MIDI, WAV, report, plan)", file_count="multiple", interactive=False,
                        elem_id="arrange-files")
    sections_state = gr.State(initial)
    arrangement_state = gr.State(None)     # the last piece written (engines.api.ArrangementView)

    card_outputs = [c[k] for c in cards for k in ("box", "head", "mode", "bars", "engine", "left", "right",
                                                  "regenerate")]

    def card_updates(sections: list[dict], arrangement) -> list:
        written = written_sections(sections, arrangement)
        out = []
        for i in range(MAX_CARDS):
            if i >= len(sections):
                out += [gr.update(visible=False)] + [gr.skip()] * 7
                continue
            s = sections[i]
            out += [gr.update(visible=True), section_head(i + 1, s, short_names, written.get(i)),
                    gr.update(value=s.get("mode", WHITE)), gr.update(value=s["bars"]),
                    gr.update(value=s["engine"]), gr.update(interactive=i > 0),
                    gr.update(interactive=i < len(sections) - 1),
                    gr.update(interactive=regenerable(i, arrangement))]
        return out

    timeline = [sections_state, *card_outputs]

    def show_timeline(sections, arrangement):
        return [sections, *card_updates(sections, arrangement)]

    def _timeline_failed(message):
        return [gr.skip()] * len(timeline) + [message]

    def edited(index: int, field: str):
        def on_edit(value, sections, arrangement):
            sections = [dict(s) for s in sections]
            if index < len(sections) and value not in (None, ""):
                sections[index][field] = int(value) if field == "bars" else value
            written = written_sections(sections, arrangement)
            return [sections, section_head(index + 1, sections[index], short_names, written.get(index)),
                    gr.update(interactive=regenerable(index, arrangement))]
        return on_edit

    def moved(index: int, step: int):
        def on_move(sections, arrangement):
            sections = [dict(s) for s in sections]
            other = index + step
            if 0 <= other < len(sections):
                sections[index], sections[other] = sections[other], sections[index]
            return [*show_timeline(sections, arrangement), ""]
        return on_move

    def removed(index: int):
        def on_remove(sections, arrangement):
            if len(sections) <= 1:
                raise StudioError("a piece needs at least one section")
            sections = [dict(s) for k, s in enumerate(sections) if k != index]
            return [*show_timeline(sections, arrangement), ""]
        return on_remove

    @guarded(_timeline_failed)
    def on_add(sections, arrangement):
        if len(sections) >= MAX_CARDS:
            raise StudioError(f"the timeline holds {MAX_CARDS} sections; a plan file of up to 16 can be written "
                              f"with `python -m engines arrange`")
        last = sections[-1] if sections else default_sections(available)[0]
        sections = [dict(s) for s in sections] + [{"bars": 4, "mode": last.get("mode", WHITE),
                                                   "engine": last["engine"]}]
        return [*show_timeline(sections, arrangement), ""]

    for i, card in enumerate(cards):
        for field in ("mode", "bars", "engine"):
            card[field].input(edited(i, field), [card[field], sections_state, arrangement_state],
                              [sections_state, card["head"], card["regenerate"]], api_visibility="private")
        card["left"].click(guarded(_timeline_failed)(moved(i, -1)), [sections_state, arrangement_state],
                           [*timeline, status], api_visibility="private")
        card["right"].click(guarded(_timeline_failed)(moved(i, 1)), [sections_state, arrangement_state],
                            [*timeline, status], api_visibility="private")
        card["remove"].click(guarded(_timeline_failed)(removed(i)), [sections_state, arrangement_state],
                             [*timeline, status], api_visibility="private")
    add.click(on_add, [sections_state, arrangement_state], [*timeline, status], api_visibility="private")

    piece_settings = [title, tempo, key, metre]

    def load_values(values: dict):
        """Plan values -> the piece's settings, the timeline, and a cleared piece."""
        sections = values["sections"]
        if len(sections) > MAX_CARDS:
            raise StudioError(f"this plan has {len(sections)} sections and the timeline holds {MAX_CARDS}; write it "
                              "with `python -m engines arrange --plan …`")
        settings = [values.get("title", ""), values.get("tempo") or 0, values.get("key") or "",
                    values.get("metre") or ""]
        return [*settings, None, *show_timeline(sections, None), ""]

    load_outputs = [*piece_settings, arrangement_state, *timeline, status]

    def _load_failed(message):
        return [gr.skip()] * (len(load_outputs) - 1) + [message]

    @guarded(_load_failed)
    def on_example(name):
        if not name:
            return [gr.skip()] * len(load_outputs)
        return load_values(engine.checked_plan(examples[name]))

    def on_upload(path):
        """The plan file onto the timeline; the box is emptied either way, ready for the next file."""
        if not path:
            return [gr.skip()] * len(load_outputs) + [None]
        return [*guarded(_load_failed)(lambda: load_values(engine.read_plan(path)))(), None]

    example.input(on_example, example, load_outputs, api_visibility="private")
    upload.upload(on_upload, upload, [*load_outputs, upload], api_visibility="private")

    @guarded(lambda message: (message, gr.skip()))
    def on_save(sections, *settings):
        return "", [engine.plan_file(plan_values(*settings, sections))]

    save.click(on_save, [sections_state, *piece_settings], [status, files], api_visibility="private")

    piece_outputs = [status, roll, audio, report, files, arrangement_state, *card_outputs]

    def piece_view(view, sections) -> list:
        shown = [p for p in (view.midi_path, view.wav_path, view.report_path, view.plan_path) if p]
        title = f"{counted(sum(s['bars'] for s in view.sections), 'bar')}: " + " → ".join(
            s["asked"] for s in view.sections)
        figure = piano_roll_figure(view.notes, title, MODE_COLORS[WHITE])
        return ["", figure, view.wav_path, report_markdown(view), shown, view, *card_updates(sections, view)]

    def _piece_failed(message):
        return [message] + [gr.skip()] * (len(piece_outputs) - 1)

    @guarded_stream(_piece_failed)
    def on_run(sections, title_text, tempo_value, key_value, metre_value, seed_value, k, request: gr.Request):
        values = plan_values(title_text, tempo_value, key_value, metre_value, sections)
        run_id = f"arrange-{request.session_hash}" if request is not None else None
        yield [progress_html(0, len(sections), f"Writing section 1 of {len(sections)}…"),
               *[gr.skip()] * (len(piece_outputs) - 1)]
        for update in engine.arrange_stream(values, seed=int(seed_value or 0), candidates=int(k) or None, run_id=run_id):
            if update[0] == "section":
                _, index, total, section = update
                heads = [gr.skip()] * len(card_outputs)
                heads[8 * index + 1] = section_head(index + 1, sections[index], short_names, section)
                following = (f"; writing section {index + 2} of {total}…" if index + 1 < total else
                             "; rendering the audio…")
                yield [progress_html(index + 1, total, f"Section {index + 1} ({section['asked']} by "
                                                       f"{short_names.get(section['engine'], section['engine'])}) "
                                                       f"heard as {section['heard']}{following}"),
                       *[gr.skip()] * 5, *heads]
                continue
            yield piece_view(update[1], sections)

    run.click(on_run, [sections_state, *piece_settings, seed, candidates], piece_outputs, api_visibility="private")

    def on_stop(request: gr.Request):
        if request is None or not engine.request_stop(f"arrange-{request.session_hash}"):
            return error_markdown("No piece is being written.")
        return progress_html(1, 1, "Stopping after this section…")

    stop.click(on_stop, None, status, queue=False, api_visibility="private")

    def regenerated(index: int):
        @guarded_stream(_piece_failed)
        def on_regenerate(arrangement, sections, title_text, tempo_value, key_value, metre_value, k):
            values = plan_values(title_text, tempo_value, key_value, metre_value, sections)
            yield [progress_html(0, 1, f"Writing section {index + 1} again, and its joins…"),
                   *[gr.skip()] * (len(piece_outputs) - 1)]
            yield piece_view(engine.arrange_regenerate(arrangement, index, values, candidates=int(k) or None), sections)
        return on_regenerate

    for i, card in enumerate(cards):
        card["regenerate"].click(regenerated(i), [arrangement_state, sections_state, *piece_settings, candidates],
                                 piece_outputs, api_visibility="private")
