"""Listen tab: blinded A/B listening sessions (engines/sessions/listening.py).

    Rate       join a session by its code (or a link with ?session=CODE), hear pairs as A and B, answer A / B /
               tie with an optional comment; the resume key brings a rater back to where they paused
    Organise   two or more systems (an engine with JSON settings, or a folder of MIDI: a path on the server,
               or files uploaded here, copied to a folder of their own), modes, stimuli per
               mode, pairs per rater, the question; every stimulus is generated and rendered before the code
               is given out
    Results    win rates with Wilson intervals and binomial p, Bradley-Terry scores with bootstrap intervals,
               per-mode tables, rater agreement, and the votes as CSV

The rater's calls are also public API endpoints (`/listen_join`, `/listen_vote`, `/listen_resume`), which
is how the concurrency test drives twenty raters through gradio_client.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from engines.api import MODES, StudioEngine
from engines.errors import StudioError
from engines.sessions.listening import ENGINE_KINDS, SessionPlan, SystemSpec
from studio.widgets import guarded

SYSTEM_COLUMNS = ["name", "kind", "settings (JSON)", "folder"]
PAIR_COLUMNS = ["system A", "system B", "A wins", "B wins", "ties", "A win rate", "95 % interval", "p"]
LISTENING_CONCURRENCY = 16  # votes are quick database writes: they do not wait behind generation jobs


def default_systems(engine: StudioEngine) -> list[list[str]]:
    engines = [e for e in engine.engines_available()]
    rows = [[engine.engine_short_name(e), e, "{}", ""] for e in engines[:2]]
    if len(rows) == 1:   # one engine: against itself, sampled hotter (or with milder guidance)
        names = {spec["name"] for spec in engine.engine_settings(rows[0][1])}
        hot = '{"temperature": 1.3}' if "temperature" in names else '{"guidance_scale": 2.0}'
        rows.append([f"{rows[0][0]} hot", rows[0][1], hot, ""])
    return rows


def systems_from_table(rows) -> list[SystemSpec]:
    """The organiser's table -> SystemSpecs; names the row and the column of anything malformed."""
    rows = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
    systems = []
    for i, row in enumerate(rows, start=1):
        name, kind, settings, folder = (list(row) + ["", "", "", ""])[:4]
        name, kind = str(name or "").strip(), str(kind or "").strip().lower()
        if not name and not kind:
            continue  # an empty row
        try:
            parsed = json.loads(str(settings or "").strip() or "{}")
        except json.JSONDecodeError as exc:
            raise StudioError(f"system row {i} ('{name}'): settings must be JSON, e.g. "
                              f'{{"temperature": 0.9}} ({exc.msg})') from None
        if not isinstance(parsed, dict):
            raise StudioError(f"system row {i} ('{name}'): settings must be a JSON object")
        systems.append(SystemSpec(name=name, kind=kind, settings=parsed, folder=str(folder or "").strip()))
    return systems


def rater_outputs(view) -> tuple:
    """A RaterView -> (key, pair, question, progress, audio A, audio B, message)."""
    if view.done:
        return (view.token, None, f"### {view.title}\n{view.question}",
                f"**All {view.total} pairs answered — thank you!**", None, None, "")
    return (view.token, view.pair, f"### {view.title}\n{view.question}",
            f"Pair **{view.answered + 1}** of **{view.total}** · your resume key: `{view.token}`",
            view.audio_a, view.audio_b, "")


def _rater_error(message):
    return (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), message)


def _vote_error(message):  # the comment stays as typed, for another try
    return _rater_error(message) + (gr.update(),)


def build_listening_tab(engine: StudioEngine):
    """Build the tab; returns (on_load, outputs) for the app's load event: a link's ?session=CODE fills the
    Rate and Results code boxes."""
    gr.Markdown("Blinded A/B listening: every pair is two systems in one mode, in your own random order and "
                "random A/B placement. Answer by ear; nothing tells you which system is which.")
    with gr.Tab("Rate", id="listen-rate"):
        with gr.Row():
            code = gr.Textbox(label="Session code", placeholder="e.g. 3FA29C1B", elem_id="listen-code")
            name = gr.Textbox(label="Your name (optional)", placeholder="anonymous", elem_id="listen-name")
            join = gr.Button("Start listening", variant="primary", elem_id="listen-join")
        with gr.Row():
            key = gr.Textbox(label="Resume key (keep it to pause and come back)", elem_id="listen-key")
            resume = gr.Button("Resume", elem_id="listen-resume")
        question = gr.Markdown(elem_id="listen-question")
        progress = gr.Markdown(elem_id="listen-progress")
        pair = gr.Number(visible=False, elem_id="listen-pair", precision=0)
        with gr.Row():
            audio_a = gr.Audio(label="A", type="filepath", interactive=False, elem_id="listen-a")
            audio_b = gr.Audio(label="B", type="filepath", interactive=False, elem_id="listen-b")
        comment = gr.Textbox(label="Comment (optional)", elem_id="listen-comment")
        with gr.Row():
            vote_a = gr.Button("A", variant="primary", elem_id="vote-a")
            vote_tie = gr.Button("Tie", elem_id="vote-tie")
            vote_b = gr.Button("B", variant="primary", elem_id="vote-b")
        message = gr.Markdown(elem_id="listen-message")
        shown = [key, pair, question, progress, audio_a, audio_b, message]

        @guarded(_rater_error)
        def on_join(code, name):
            return rater_outputs(engine.listening.join(code, name))

        @guarded(_rater_error)
        def on_resume(token):
            return rater_outputs(engine.listening.rater_view((token or "").strip()))

        def on_vote(choice):
            @guarded(_vote_error)
            def handler(token, pair_id, comment):
                if pair_id is None:
                    raise StudioError("no pair to answer: join a session or resume with your key")
                return rater_outputs(engine.listening.vote(token, int(pair_id), choice, comment)) + ("",)
            return handler

        listening = dict(concurrency_limit=LISTENING_CONCURRENCY, concurrency_id="listening")
        join.click(on_join, [code, name], shown, api_visibility="private", **listening)
        resume.click(on_resume, [key], shown, api_visibility="private", **listening)
        for button, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
            button.click(on_vote(choice), [key, pair, comment], shown + [comment], api_visibility="private",
                         **listening)

        def listen_join(code: str, name: str = "") -> dict:
            """Join session `code`; returns the first pair (audio paths, pair id) and the rater's key."""
            return asdict(engine.listening.join(code, name))

        def listen_vote(key: str, pair: int, choice: str, comment: str = "") -> dict:
            """Answer A, B or tie on `pair`; returns the next pair. Repeating an answer stores nothing."""
            return asdict(engine.listening.vote(key, int(pair), choice, comment))

        def listen_resume(key: str) -> dict:
            """Where the rater with `key` stands."""
            return asdict(engine.listening.rater_view(key))

        for fn in (listen_join, listen_vote, listen_resume):
            gr.api(fn, api_name=fn.__name__, **listening)

    with gr.Tab("Organise", id="listen-organise"):
        with gr.Row():
            title = gr.Textbox(label="Title", value="Chromatic listening test", elem_id="organise-title")
            ask = gr.Textbox(label="Question", value="Which one sounds more like its mode?",
                             elem_id="organise-question")
        systems = gr.Dataframe(value=default_systems(engine), headers=SYSTEM_COLUMNS, interactive=True,
                               row_count=(2, "dynamic"), col_count=(4, "fixed"), elem_id="organise-systems",
                               label=f"Systems (kind: {', '.join(ENGINE_KINDS)}; settings e.g. "
                                     '{"temperature": 0.9} or {"prompt": "a calm BLUE phrase"})')
        with gr.Accordion("Upload MIDI files as a system", open=False):
            with gr.Row():
                upload = gr.File(file_count="multiple", file_types=[".mid", ".midi"], label="MIDI files",
                                 elem_id="organise-upload")
                with gr.Column():
                    upload_name = gr.Textbox(label="System name", placeholder="e.g. my pieces",
                                             elem_id="organise-upload-name")
                    add_upload = gr.Button("Add as a system", elem_id="organise-upload-add")
                    upload_message = gr.Markdown(elem_id="organise-upload-message")
        with gr.Row():
            modes = gr.CheckboxGroup(list(MODES), value=["RED", "BLUE"], label="Modes", elem_id="organise-modes")
            per_mode = gr.Slider(1, 16, 3, step=1, label="Stimuli per system and mode", elem_id="organise-per-mode")
            per_rater = gr.Slider(1, 64, 8, step=1, label="Pairs per rater", elem_id="organise-per-rater")
        create = gr.Button("Generate stimuli and open the session", variant="primary", elem_id="organise-create")
        created = gr.Markdown(elem_id="organise-created")

        @guarded(lambda message: message)
        def on_create(title, ask, rows, modes, per_mode, per_rater, request: gr.Request,
                      progress=gr.Progress()):
            plan = SessionPlan(title=title or "", question=ask or "", systems=systems_from_table(rows),
                               modes=list(modes or []), stimuli_per_mode=int(per_mode),
                               pairs_per_rater=int(per_rater))
            code = engine.listening.create(plan, progress=lambda done, total, what: progress(
                done / max(total, 1), desc=f"rendering {what}"))
            info = engine.listening.store.session(code)
            base = str(getattr(request, "url", "") or "").split("?")[0] if request is not None else ""
            link = f"{base}?session={code}" if base else f"?session={code}"
            return (f"Session **{code}** is open: {info['pairs']} pairs. Raters enter the code on the Rate tab "
                    f"or open {link}")

        @guarded(lambda message: (gr.skip(), message))
        def on_add_upload(files, name, rows):
            paths = [getattr(f, "name", f) for f in (files or [])]
            folder = engine.listening.import_midi(name, paths)
            rows = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
            rows = [r for r in rows if any(str(c or "").strip() for c in r)]   # drop empty rows
            rows.append([name.strip(), "folder", "{}", folder])
            return rows, f"Added **{name.strip()}**: {len(paths)} file(s); its stimuli are the segments the analyzer " \
                         "hears in each chosen mode."

        add_upload.click(on_add_upload, [upload, upload_name, systems], [systems, upload_message],
                         api_visibility="private")
        create.click(on_create, [title, ask, systems, modes, per_mode, per_rater], created, api_visibility="private")

    with gr.Tab("Results", id="listen-results"):
        with gr.Row():
            results_code = gr.Textbox(label="Session code", elem_id="results-code")
            show = gr.Button("Show results", variant="primary", elem_id="results-show")
        summary = gr.Markdown(elem_id="results-summary")
        pairs_table = gr.Dataframe(headers=PAIR_COLUMNS, interactive=False, label="Head to head",
                                   elem_id="results-pairs")
        strengths = gr.Plot(label="Bradley-Terry scores", elem_id="results-bt")
        per_mode = gr.Dataframe(headers=["mode"] + PAIR_COLUMNS, interactive=False, label="Per mode",
                                elem_id="results-modes")
        export = gr.File(label="Votes (CSV)", interactive=False, elem_id="results-csv")

        @guarded(lambda message: (message, None, None, None, None))
        def on_results(code):
            service = engine.listening
            result = service.results(code)
            s, agreement = result["session"], result["agreement"]
            kappa = agreement["fleiss_kappa"]
            text = (f"### {s['title']}\n{s['question']} · status {s['status']} · **{result['votes']}** votes from "
                    f"**{result['raters']}** raters · agreement (Fleiss' kappa over "
                    f"{agreement['pairs_rated_twice']} pairs heard by two or more): "
                    f"{'n/a' if kappa is None else f'{kappa:.2f}'}")
            bt = result["bradley_terry"]
            figure = go.Figure(go.Bar(
                x=bt["systems"], y=bt["scores"],
                error_y=dict(type="data", symmetric=False,
                             array=[hi - sc for sc, (_, hi) in zip(bt["scores"], bt["intervals"])],
                             arrayminus=[sc - lo for sc, (lo, _) in zip(bt["scores"], bt["intervals"])])))
            figure.update_layout(height=300, margin=dict(l=40, r=10, t=30, b=30),
                                 title="Bradley-Terry log-strength (95 % bootstrap interval)")
            modes_rows = [[mode] + _pair_row(r) for mode, rows in result["per_mode"].items() for r in rows]
            path = Path(engine.out_dir) / f"votes-{s['code']}.csv"  # served with the studio's renders
            path.write_text(service.votes_csv(s["code"]))
            return text, [_pair_row(r) for r in result["head_to_head"]], figure, modes_rows, str(path)

        show.click(on_results, [results_code], [summary, pairs_table, strengths, per_mode, export],
                   api_visibility="private")

    def open_from_link(request: gr.Request):
        linked = (dict(request.query_params).get("session", "") if request is not None else "").strip().upper()
        return gr.update(value=linked) if linked else gr.update(), gr.update(value=linked) if linked else gr.update()

    return open_from_link, [code, results_code]


def _pair_row(r: dict) -> list:
    rate = "–" if r["a_win_rate"] is None else f"{r['a_win_rate']:.0%}"
    low, high = r["interval"]
    return [r["system_a"], r["system_b"], r["a_wins"], r["b_wins"], r["ties"], rate, f"{low:.0%}–{high:.0%}",
            f"{r['p_value']:.3f}"]

