"""Listen tab: blinded A/B listening sessions (engines/sessions/listening.py).

    Rate       join a session by its code (or a link: ?session=CODE, &invite=TOKEN for an invitation), hear
               the pair as A and B, answer A / B / tie with an optional comment; the resume key brings a rater
               back to where they paused
    Organise   two or more systems (an engine with JSON settings, or a folder of MIDI: uploaded here, or a
               folder listed in sessions.allowed_folders), modes, stimuli per mode, pairs per rater, the
               question, who may join (open with a cap, or one-use invitation links); every stimulus is
               generated and rendered before the code is given out, with the organiser key (shown once).
               When the studio is served beyond this machine, creating needs a creator key.
    Results    with the session's organiser key: win rates with Wilson intervals and binomial p, Bradley-Terry
               scores with bootstrap intervals, per-mode tables, rater agreement, the votes as CSV; close,
               reopen, add raters

Public API endpoints (every other handler here is private): `/listen_join(code, name, invite)`,
`/listen_vote(key, pair, choice, comment)`, `/listen_resume(key)` for raters (their audio comes back as files
A.wav and B.wav), and `/listen_results(code, organiser_key)`, `/listen_close(code, organiser_key)` for the
organiser. A refused call raises its reason (gr.Error), which gradio_client shows.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from engines.api import MODES, StudioEngine
from engines.errors import StudioError
from engines.sessions.listening import ENGINE_KINDS, Joining, SessionPlan, SystemSpec, rater_link
from studio.widgets import api_errors, guarded

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


JOINING_CHOICES = ["open to anyone with the code", "invitation links, one per rater"]


def public_view(view) -> dict:
    """A RaterView as an API client gets it: the pair's audio as files (Gradio serves its own copies; the
    names are A.wav and B.wav), and nothing of the systems."""
    def audio(path):
        return None if path is None else gr.FileData(path=path, orig_name=Path(path).name,
                                                     mime_type="audio/wav").model_dump()

    return {"token": view.token, "session": view.session, "title": view.title, "question": view.question,
            "answered": view.answered, "total": view.total, "pair": view.pair, "done": view.done,
            "audio_a": audio(view.audio_a), "audio_b": audio(view.audio_b)}


def page_url(request: gr.Request | None) -> str:
    """The studio page's address as the organiser's browser sees it (the page, not the queue endpoint)."""
    if request is None:
        return ""
    headers = dict(getattr(request, "headers", {}) or {})
    referer = headers.get("referer", "")
    if referer:
        return referer.split("?")[0].split("#")[0]
    origin = headers.get("origin", "")
    return f"{origin}/" if origin else ""


def created_message(made, base_url: str) -> str:
    links = made.rater_links(base_url or "")
    shown = "\n".join(f"- {link}" for link in links)
    who = (f"{len(made.invitations)} invitation links, one per rater, each usable once:" if made.invitations
           else "raters open this link (or enter the code on the Rate tab):")
    return (f"Session **{made.code}** is open: {made.pairs} pairs.\n\n"
            f"**Organiser key: `{made.organiser_key}`** — copy it now: it is shown once, and results, the votes, "
            f"closing the session and adding raters need it.\n\n{who}\n{shown}")


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
    """Build the tab; returns (on_load, outputs) for the app's load event: a link's ?session=CODE (and
    &invite=TOKEN) opens the Listen tab's Rate page with them filled in."""
    gr.Markdown("Blinded A/B listening: every pair is two systems in one mode, in your own random order and "
                "random A/B placement. Answer by ear; nothing tells you which system is which.")
    listening = dict(concurrency_limit=LISTENING_CONCURRENCY, concurrency_id="listening")
    with gr.Tabs(elem_id="listen-tabs", overflow_behavior="wrap") as tabs:
        with gr.Tab("Rate", id="listen-rate"):
            with gr.Row():
                code = gr.Textbox(label="Session code", placeholder="e.g. 3FA29C1B", elem_id="listen-code")
                name = gr.Textbox(label="Your name (optional)", placeholder="anonymous", elem_id="listen-name")
                invite = gr.Textbox(label="Invitation (filled in by your link)", elem_id="listen-invite")
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
            def on_join(code, name, invitation):
                return rater_outputs(engine.listening.join(code, name, invitation))

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

            join.click(on_join, [code, name, invite], shown, api_visibility="private", **listening)
            resume.click(on_resume, [key], shown, api_visibility="private", **listening)
            for button, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
                button.click(on_vote(choice), [key, pair, comment], shown + [comment], api_visibility="private",
                             **listening)

        with gr.Tab("Organise", id="listen-organise"):
            creator_key = gr.Textbox(label="Organiser key (creating sessions on this studio needs one: see the "
                                           "studio's start-up message)", type="password",
                                     visible=not engine.open_creation, elem_id="organise-creator-key")
            with gr.Row():
                title = gr.Textbox(label="Title", value="Chromatic listening test", elem_id="organise-title")
                ask = gr.Textbox(label="Question", value="Which one sounds more like its mode?",
                                 elem_id="organise-question")
            systems = gr.Dataframe(value=default_systems(engine), headers=SYSTEM_COLUMNS, interactive=True,
                                   row_count=(2, "dynamic"), col_count=(4, "fixed"), elem_id="organise-systems",
                                   label=f"Systems (kind: {', '.join(ENGINE_KINDS)}; settings e.g. "
                                         '{"temperature": 0.9} or {"prompt": "a calm BLUE phrase"}; a folder: '
                                         "uploaded below, or listed in sessions.allowed_folders)")
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
                per_mode = gr.Slider(1, 16, 3, step=1, label="Stimuli per system and mode",
                                     elem_id="organise-per-mode")
                per_rater = gr.Slider(1, 64, 8, step=1, label="Pairs per rater", elem_id="organise-per-rater")
            with gr.Row():
                joining = gr.Radio(JOINING_CHOICES, value=JOINING_CHOICES[0], label="Who may join",
                                   elem_id="organise-joining")
                raters = gr.Number(value=0, precision=0, minimum=0, maximum=1000, elem_id="organise-raters",
                                   label="Raters: the cap for open joining (0 = no cap), or how many invitations")
            create = gr.Button("Generate stimuli and open the session", variant="primary", elem_id="organise-create")
            created = gr.Markdown(elem_id="organise-created")

            @guarded(lambda message: message)
            def on_create(creator, title, ask, rows, modes, per_mode, per_rater, joining, raters,
                          request: gr.Request, progress=gr.Progress()):
                count = int(raters or 0)
                is_open = joining != JOINING_CHOICES[1]
                plan = SessionPlan(title=title or "", question=ask or "", systems=systems_from_table(rows),
                                   modes=list(modes or []), stimuli_per_mode=int(per_mode),
                                   pairs_per_rater=int(per_rater),
                                   joining=Joining(open=is_open, max_raters=(count or None) if is_open else None,
                                                   invitations=0 if is_open else count))
                made = engine.listening.create(plan, creator_key=creator or "", progress=lambda done, total, what:
                                               progress(done / max(total, 1), desc=f"rendering {what}"))
                return created_message(made, page_url(request))

            @guarded(lambda message: (gr.skip(), message))
            def on_add_upload(files, name, rows):
                paths = [getattr(f, "name", f) for f in (files or [])]
                try:
                    folder = engine.listening.import_midi(name, paths)
                except StudioError:
                    for path in paths:   # a refused upload is not kept (nor served) anywhere
                        Path(path).unlink(missing_ok=True)
                    raise
                rows = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
                rows = [r for r in rows if any(str(c or "").strip() for c in r)]   # drop empty rows
                rows.append([name.strip(), "folder", "{}", folder])
                return rows, f"Added **{name.strip()}**: {len(paths)} file(s); its stimuli are the segments the " \
                             "analyzer hears in each chosen mode."

            add_upload.click(on_add_upload, [upload, upload_name, systems], [systems, upload_message],
                             api_visibility="private")
            create.click(on_create, [creator_key, title, ask, systems, modes, per_mode, per_rater, joining, raters],
                         created, api_visibility="private")

        with gr.Tab("Results", id="listen-results"):
            with gr.Row():
                results_code = gr.Textbox(label="Session code", elem_id="results-code")
                results_key = gr.Textbox(label="Organiser key", type="password", elem_id="results-key")
                show = gr.Button("Show results", variant="primary", elem_id="results-show")
            with gr.Row():
                close = gr.Button("Close the session", elem_id="results-close")
                reopen = gr.Button("Reopen it", elem_id="results-reopen")
                more = gr.Number(value=5, precision=0, minimum=1, maximum=1000, label="Raters to add",
                                 elem_id="results-more")
                add_raters = gr.Button("Add raters", elem_id="results-add")
            manage = gr.Markdown(elem_id="results-manage")
            summary = gr.Markdown(elem_id="results-summary")
            pairs_table = gr.Dataframe(headers=PAIR_COLUMNS, interactive=False, label="Head to head",
                                       elem_id="results-pairs")
            strengths = gr.Plot(label="Bradley-Terry scores", elem_id="results-bt")
            per_mode_table = gr.Dataframe(headers=["mode"] + PAIR_COLUMNS, interactive=False, label="Per mode",
                                          elem_id="results-modes")
            export = gr.File(label="Votes (CSV)", interactive=False, elem_id="results-csv")

            @guarded(lambda message: (message, None, None, None, None))
            def on_results(code, organiser_key):
                service = engine.listening
                result = service.results(code, organiser_key)
                s, agreement = result["session"], result["agreement"]
                kappa = agreement["fleiss_kappa"]
                text = (f"### {s['title']}\n{s['question']} · status **{s['status']}** · {joining_text(result)} · "
                        f"**{result['votes']}** votes from **{result['raters']}** raters · agreement (Fleiss' kappa "
                        f"over {agreement['pairs_rated_twice']} pairs heard by two or more): "
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
                # a folder of its own, so the file is named for the session and its path guessed by no one
                folder = Path(engine.out_dir) / "votes" / secrets.token_hex(12)
                folder.mkdir(parents=True)
                path = folder / f"votes-{s['code']}.csv"
                path.write_text(service.votes_csv(s["code"], organiser_key))
                return text, [_pair_row(r) for r in result["head_to_head"]], figure, modes_rows, str(path)

            @guarded(lambda message: message)
            def on_close(code, organiser_key):
                info = engine.listening.close(code, organiser_key)
                return f"Session **{info['code']}** is closed: it takes no more raters or votes; results stay."

            @guarded(lambda message: message)
            def on_reopen(code, organiser_key):
                info = engine.listening.reopen(code, organiser_key)
                return f"Session **{info['code']}** is open again."

            @guarded(lambda message: message)
            def on_add_raters(code, organiser_key, count, request: gr.Request):
                service = engine.listening
                tokens = service.add_raters(code, organiser_key, int(count or 0))
                info = service.store.session(code)
                if tokens:
                    base = page_url(request)
                    links = "\n".join(f"- {rater_link(base, info['code'], t)}" for t in tokens)
                    return f"{len(tokens)} new invitation links for **{info['code']}**, each usable once:\n{links}"
                cap = "no cap" if info["max_raters"] is None else f"room for {info['max_raters']} raters"
                return f"Session **{info['code']}** now has {cap} ({info['raters_joined']} joined)."

            show.click(on_results, [results_code, results_key], [summary, pairs_table, strengths, per_mode_table,
                                                                 export], api_visibility="private")
            close.click(on_close, [results_code, results_key], manage, api_visibility="private")
            reopen.click(on_reopen, [results_code, results_key], manage, api_visibility="private")
            add_raters.click(on_add_raters, [results_code, results_key, more], manage, api_visibility="private")

    # ---- the public API: raters' calls, and the organiser's with the session's key ---------------------------
    @api_errors
    def listen_join(code: str, name: str = "", invite: str = "") -> dict:
        """Join session `code` (with your invitation, when the session is by invitation); returns your key and
        the first pair: its id and its audio as files A.wav and B.wav."""
        return public_view(engine.listening.join(code, name, invite))

    @api_errors
    def listen_vote(key: str, pair: int, choice: str, comment: str = "") -> dict:
        """Answer A, B or tie on `pair`; returns the next pair. Repeating an answer stores nothing."""
        try:
            pair = int(pair)
        except (TypeError, ValueError):
            raise StudioError(f"pair must be a pair's number, got {pair!r}") from None
        return public_view(engine.listening.vote(key, pair, choice, comment))

    @api_errors
    def listen_resume(key: str) -> dict:
        """Where the rater with `key` stands: the pair they are answering, or that they are done."""
        return public_view(engine.listening.rater_view(key))

    @api_errors
    def listen_results(code: str, organiser_key: str) -> dict:
        """The session's results (what the Results tab shows), with its organiser key."""
        return engine.listening.results(code, organiser_key)

    @api_errors
    def listen_close(code: str, organiser_key: str) -> dict:
        """Close the session (with its organiser key): no more joining or votes."""
        info = engine.listening.close(code, organiser_key)
        return {"code": info["code"], "status": info["status"]}

    for fn in (listen_join, listen_vote, listen_resume, listen_results, listen_close):
        gr.api(fn, api_name=fn.__name__, **listening)

    def open_from_link(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        linked = str(query.get("session", "")).strip().upper()
        invitation = str(query.get("invite", "")).strip()
        if not linked:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        return (gr.update(selected="listen"), gr.update(selected="listen-rate"), gr.update(value=linked),
                gr.update(value=invitation), gr.update(value=linked))

    return open_from_link, [tabs, code, invite, results_code]


def joining_text(result: dict) -> str:
    joining = result["joining"]
    if not joining["open"]:
        made = joining["invitations"]
        return f"by invitation: {made['used']} of {made['made']} links used"
    cap = "no cap" if joining["max_raters"] is None else f"cap {joining['max_raters']}"
    return f"open joining ({joining['raters_joined']} joined, {cap})"


def _pair_row(r: dict) -> list:
    rate = "–" if r["a_win_rate"] is None else f"{r['a_win_rate']:.0%}"
    low, high = r["interval"]
    return [r["system_a"], r["system_b"], r["a_wins"], r["b_wins"], r["ties"], rate, f"{low:.0%}–{high:.0%}",
            f"{r['p_value']:.3f}"]

