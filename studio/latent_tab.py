"""Latent Explorer tab: the VAE's UMAP map of corpus latents, decoding any place on it, interpolation strips
between two picked points, and attribute arithmetic on the current latent.

Clicks on the plotly map reach Python through a small script (MAP_CLICK_JS, loaded in the page head): it
writes "x,y,segment" of the click into a hidden textbox, whose input event runs `on_click`. A transparent
heat-map layer under the points makes every place on the map clickable, not only the dots. Dragging on the map
moves a marker with the pointer; on release the same script writes the place let go of ("x,y,-1"), so a drag
decodes where it ends (the map does not pan: its limits fit the bulk of the points, outliers clipped to the
edge). Segment numbers can also be typed, which is what keyboard users (and tests that need no canvas) use.
The attribute sliders beside the map act when released: the latent is shifted, decoded and played, and the
marker moves to where the shifted latent lies (LatentMap.project).

Per-user state (gr.State): {"base", "current", "a", "b"} latents as lists of floats, with labels.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from engines.api import MODE_COLORS, MODES, RANGE_FILTERS, StudioEngine
from engines.explorer import SHIFT_VECTORS
from engines.errors import StudioError
from studio.widgets import analysis_markdown, guarded, mode_chip, piano_roll_figure

AXIS_CHOICES = list(RANGE_FILTERS)  # for the analyzer-axes map shown when no VAE map exists
ROLES = ["decode it", "set A", "set B"]
GRID = 90  # cells per side of the clickable layer

MAP_CLICK_JS = """
<script>
(() => {
  function send(text) {
    const box = document.querySelector('#latent-click textarea, #latent-click input');
    if (!box) return;
    box.value = `${text},${Date.now()}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }
  function dataAt(plot, event) {   // the pointer's place in the map's data coordinates (null: off the plot area)
    const layout = plot._fullLayout, box = plot.getBoundingClientRect();
    if (!layout || !layout.xaxis) return null;
    const px = event.clientX - box.left - layout._size.l, py = event.clientY - box.top - layout._size.t;
    if (px < 0 || py < 0 || px > layout._size.w || py > layout._size.h) return null;
    return [layout.xaxis.p2d(px), layout.yaxis.p2d(py), event.clientX - box.left, event.clientY - box.top];
  }
  function bindDrag(plot) {
    let start = null, marker = null;
    plot.addEventListener('mousedown', (event) => {
      if (event.button === 0 && dataAt(plot, event)) start = [event.clientX, event.clientY];
    }, true);
    window.addEventListener('mousemove', (event) => {
      if (!start) return;
      if (!marker && Math.hypot(event.clientX - start[0], event.clientY - start[1]) < 5) return;  // still a click
      const place = dataAt(plot, event);
      if (!place) return;
      if (!marker) {
        marker = document.createElement('div');
        marker.id = 'latent-drag-marker';
        marker.textContent = '✕';
        marker.style.cssText = 'position:absolute;pointer-events:none;font:bold 20px sans-serif;color:#e11d48;' +
                               'transform:translate(-50%,-50%);z-index:10';
        plot.style.position = 'relative';
        plot.appendChild(marker);
      }
      marker.style.left = `${place[2]}px`;
      marker.style.top = `${place[3]}px`;
    });
    window.addEventListener('mouseup', (event) => {
      if (!start) return;
      const dragged = marker !== null, place = dataAt(plot, event);
      start = null;
      if (!dragged) return;             // a click: plotly_click sends it
      marker.remove();
      marker = null;
      if (place) send(`${place[0]},${place[1]},-1`);
    });
  }
  function bind() {
    document.querySelectorAll('#latent-map .js-plotly-plot').forEach((plot) => {
      if (plot.__studioClick || !plot.on) return;
      plot.__studioClick = true;
      plot.on('plotly_click', (event) => {
        const p = event.points[0];
        const segment = (p.customdata === undefined || p.customdata === null) ? -1 : p.customdata;
        send(`${p.x},${p.y},${segment}`);
      });
      bindDrag(plot);
    });
  }
  new MutationObserver(bind).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""


# ---- figures ------------------------------------------------------------------------------------------------
def map_limits(values: np.ndarray) -> tuple[float, float]:
    """Axis limits that fit the bulk of the points: the 1st to 99th percentile, padded by 5 %, so that a few
    outliers (clipped to the edge) do not squeeze thousands of dots into a corner."""
    low, high = np.percentile(values, [1, 99])
    pad = 0.05 * (high - low + 1e-6)
    return float(low - pad), float(high + pad)


def latent_map_figure(points: dict, marks: dict | None = None) -> go.Figure:
    """The UMAP map: a dot per corpus latent coloured by mode; `marks` {"A": (x, y), "B": …, "here": …}."""
    (x_low, x_high), (y_low, y_high) = map_limits(np.asarray(points["x"])), map_limits(np.asarray(points["y"]))
    x, y = np.clip(points["x"], x_low, x_high), np.clip(points["y"], y_low, y_high)
    gx, gy = np.linspace(x_low, x_high, GRID), np.linspace(y_low, y_high, GRID)
    fig = go.Figure(go.Heatmap(x=gx, y=gy, z=np.zeros((GRID, GRID)), opacity=0, showscale=False,
                               hoverinfo="none", name="place"))
    for mode in MODES:
        idx = [i for i, m in enumerate(points["mode"]) if m == mode]
        fig.add_trace(go.Scattergl(
            x=x[idx], y=y[idx], mode="markers", name=mode, marker=dict(color=MODE_COLORS[mode], size=5, opacity=0.75),
            customdata=[points["index"][i] for i in idx], text=[points["label"][i] for i in idx],
            hovertemplate=f"%{{text}}<br>{mode} · segment %{{customdata}}<extra></extra>"))
    symbols = {"A": "star", "B": "diamond", "here": "x"}
    for name, place in (marks or {}).items():
        if place is not None:
            place = (float(np.clip(place[0], x_low, x_high)), float(np.clip(place[1], y_low, y_high)))
            fig.add_trace(go.Scatter(x=[place[0]], y=[place[1]], mode="markers+text", text=[name],
                                     textposition="top center", name=name, hoverinfo="skip",
                                     marker=dict(symbol=symbols[name], size=16, color="#000",
                                                 line=dict(width=1, color="#fff"))))
    # dragmode False: a drag moves the marker (MAP_CLICK_JS), it does not pan; the limits hold the bulk
    fig.update_layout(height=520, margin=dict(l=30, r=10, t=10, b=30), legend=dict(orientation="h", y=-0.08),
                      xaxis=dict(showticklabels=False, title=None, range=[x_low, x_high], fixedrange=True),
                      yaxis=dict(showticklabels=False, title=None, range=[y_low, y_high], fixedrange=True),
                      hovermode="closest", dragmode=False)
    return fig


def axes_map_figure(engine: StudioEngine, x_axis: str, y_axis: str) -> go.Figure:
    """The corpus placed by two analyzer axes (shown when the VAE has no latent map)."""
    points = engine.axis_points(x_axis, y_axis)
    fig = go.Figure()
    for mode in MODES:
        idx = [i for i, m in enumerate(points["mode"]) if m == mode]
        fig.add_trace(go.Scattergl(
            x=[points["x"][i] for i in idx], y=[points["y"][i] for i in idx], mode="markers", name=mode,
            marker=dict(color=MODE_COLORS[mode], size=5, opacity=0.7), customdata=[points["index"][i] for i in idx],
            hovertemplate=f"{mode} · segment %{{customdata}}<extra></extra>"))
    fig.update_layout(height=520, xaxis_title=x_axis, yaxis_title=y_axis, margin=dict(l=40, r=10, t=10, b=40),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def view_markdown(view) -> str:
    if view.analysis is None:
        return f"**{view.title}** decodes to silence here; try another place."
    return (f"**{view.title}** — the analyzer hears {mode_chip(view.analysis['mode'], view.color)}\n\n"
            + analysis_markdown(view.analysis, view.color, heading=False))


# ---- the tab ------------------------------------------------------------------------------------------------
def build_latent_tab(engine: StudioEngine) -> None:
    try:
        points = engine.explorer.map_points()
    except StudioError as exc:
        build_axes_map(engine, str(exc))
        return
    gr.Markdown("Every dot is a 4-bar corpus segment placed by its VAE latent (UMAP), coloured by its mode. "
                "**Click a dot or any place, or drag** on the map: the VAE decodes that latent where you let go. "
                "Set **A** and **B** the same way and play the interpolation between them; steer the current "
                "latent with the sliders beside the map. The VAE writes in C (major or minor): segments are "
                "moved to the tonic C before they are encoded.")
    state = gr.State({})
    with gr.Row():
        with gr.Column(scale=3):
            plot = gr.Plot(latent_map_figure(points), show_label=False, elem_id="latent-map")
            click = gr.Textbox(elem_id="latent-click", elem_classes="studio-hidden", show_label=False)
        with gr.Column(scale=2, min_width=300):
            role = gr.Radio(ROLES, value="decode it", label="A click on the map…", elem_id="latent-role")
            decode_mode = gr.Dropdown(["WHITE"] + list(MODES), value="WHITE", label="Decode under mode")
            with gr.Row():
                segment = gr.Number(label="…or a segment number", precision=0, minimum=0, elem_id="latent-segment")
                use_segment = gr.Button("Use segment", elem_id="latent-use-segment")
            picked = gr.Markdown("A: —  ·  B: —", elem_id="latent-picked")
            status = gr.Markdown(elem_id="latent-status")
            with gr.Accordion("Steer the current latent", open=True, elem_id="latent-steer"):
                gr.Markdown("Each slider moves the decoded latent along a direction learned from the training "
                            "latents (mean of the top quarter minus the bottom quarter; 1 = that whole "
                            "difference). On release it decodes, plays, and the ✕ moves on the map.")
                sliders = [gr.Slider(-2, 2, 0, step=0.25, label=name.replace("_", " "),
                                     elem_id=f"latent-shift-{name.replace('_', '-')}") for name in SHIFT_VECTORS]
                with gr.Row():
                    towards = gr.Dropdown(["WHITE"] + list(MODES), value="WHITE", label="Towards mode (WHITE = off)")
                    towards_amount = gr.Slider(-2, 2, 0, step=0.25, label="Amount", elem_id="latent-towards-amount")
    with gr.Row():
        roll = gr.Plot(label="Decoded", elem_id="latent-roll")
        with gr.Column():
            readout = gr.Markdown(elem_id="latent-readout")
            # plays as soon as a click, a drag or a slider has decoded a latent: the map is for listening
            audio = gr.Audio(type="filepath", interactive=False, label="Listen", elem_id="latent-audio", autoplay=True)
            files = gr.File(file_count="multiple", interactive=False, show_label=False)
    with gr.Accordion("Interpolate A → B", open=True):
        with gr.Row():
            steps = gr.Slider(3, 16, 8, step=1, label="Steps")
            method = gr.Radio(["slerp", "lerp"], value="slerp", label="Path")
            interpolate = gr.Button("Interpolate", variant="primary", elem_id="latent-interpolate")
        strip_plot = gr.Plot(label="Interpolation strip", elem_id="latent-strip")
        with gr.Row():
            strip_audio = gr.Audio(type="filepath", interactive=False, label="All steps, stitched",
                                   elem_id="latent-strip-audio")
            with gr.Column():
                step = gr.Slider(1, 16, 1, step=1, label="Play one step", elem_id="latent-step")
                step_audio = gr.Audio(type="filepath", interactive=False, show_label=False, elem_id="latent-step-audio")
                step_readout = gr.Markdown()
        strip_files = gr.File(file_count="multiple", interactive=False, show_label=False)
        strip_state = gr.State([])

    decoded_outputs = [roll, readout, audio, files]

    def decoded(view) -> list:
        return [piano_roll_figure(view.notes, "", view.color, height=280), view_markdown(view), view.wav_path,
                [view.midi_path] + ([view.wav_path] if view.wav_path else [])]

    def picked_markdown(st: dict) -> str:
        return f"A: {st.get('a_label', '—')}  ·  B: {st.get('b_label', '—')}"

    def marks(st: dict) -> dict:
        return {k: st.get(f"{key}_xy") for k, key in (("A", "a"), ("B", "b"), ("here", "current"))}

    def place(st: dict, chosen_role: str, latent: list, label: str, xy, mode: str) -> list:
        """Put a latent where the role says; returns [state, map, picked, status] + decoded outputs."""
        st = dict(st or {})
        if chosen_role == "decode it":
            st.update(base=latent, base_label=label, base_xy=xy, current=latent, current_xy=xy)
            view = engine.explorer.decode(latent, mode, title=label)
            out = decoded(view)
        else:
            key = "a" if chosen_role == "set A" else "b"
            st.update({key: latent, f"{key}_label": label, f"{key}_xy": xy})
            out = [gr.update()] * len(decoded_outputs)
        return [st, latent_map_figure(points, marks(st)), picked_markdown(st), ""] + out

    def keep(message: str) -> list:
        return [gr.update(), gr.update(), gr.update(), message] + [gr.update()] * len(decoded_outputs)

    @guarded(keep)
    def on_click(text, chosen_role, mode, st):
        try:
            x, y, seg = (float(v) for v in text.split(",")[:3])
        except ValueError:
            raise StudioError(f"could not read the map click '{text}'")
        if seg >= 0:
            return place(st, chosen_role, engine.explorer.latent_of_segment(int(seg)), f"segment {int(seg)}",
                         (x, y), mode)
        return place(st, chosen_role, engine.explorer.latent_at(x, y), f"place ({x:.2f}, {y:.2f})", (x, y), mode)

    @guarded(keep)
    def on_segment(number, chosen_role, mode, st):
        if number is None:
            raise StudioError("type a segment number first")
        i = int(number)
        latent = engine.explorer.latent_of_segment(i)
        where = points["index"].index(i) if i in points["index"] else None
        xy = (points["x"][where], points["y"][where]) if where is not None else None
        return place(st, chosen_role, latent, f"segment {i}", xy, mode)

    @guarded(lambda message: [message, gr.update(), None, [], [], gr.update(), None, ""])
    def on_interpolate(st, n, path, mode):
        st = st or {}
        if "a" not in st or "b" not in st:
            raise StudioError("pick A and B first: choose 'set A' / 'set B' above, then click the map")
        strip = engine.explorer.interpolate(st["a"], st["b"], int(n), path, mode)
        heard = [v.analysis["mode"] if v.analysis else "silence" for v in strip.steps]
        summary = f"{len(strip.steps)} steps from {st['a_label']} to {st['b_label']}: " + " → ".join(heard)
        figure = piano_roll_figure(strip.notes, "", height=300)
        steps_played = [(v.wav_path, view_markdown(v)) for v in strip.steps]
        return [summary, figure, strip.wav_path, [strip.midi_path, strip.wav_path], steps_played,
                gr.update(maximum=len(strip.steps), value=1), *steps_played[0]]

    def on_step(steps_played, k):
        if not steps_played:
            return None, ""
        wav, text = steps_played[min(int(k), len(steps_played)) - 1]
        return wav, text

    @guarded(lambda message: [gr.update(), gr.update(), message] + [gr.update()] * len(decoded_outputs))
    def on_apply(st, mode, target, target_amount, *amounts):
        st = dict(st or {})
        if "base" not in st:
            raise StudioError("decode a latent first: click or drag on the map with 'decode it' chosen")
        latent = engine.explorer.shift(st["base"], dict(zip(SHIFT_VECTORS, amounts)), target, target_amount)
        st["current"], st["current_xy"] = latent, engine.explorer.place_of(latent)
        changes = [f"{n.replace('_', ' ')} {a:+g}" for n, a in zip(SHIFT_VECTORS, amounts) if a]
        if target != "WHITE" and target_amount:
            changes.append(f"towards {target} {target_amount:+g}")
        view = engine.explorer.decode(latent, mode, title=f"{st['base_label']}, " + (", ".join(changes) or "unchanged"))
        return [st, latent_map_figure(points, marks(st)), ""] + decoded(view)

    common = [state, plot, picked, status] + decoded_outputs
    click.change(on_click, [click, role, decode_mode, state], common, api_visibility="private")
    use_segment.click(on_segment, [segment, role, decode_mode, state], common, api_visibility="private")
    interpolate.click(on_interpolate, [state, steps, method, decode_mode],
                      [status, strip_plot, strip_audio, strip_files, strip_state, step, step_audio, step_readout],
                      api_visibility="private")
    step.change(on_step, [strip_state, step], [step_audio, step_readout], api_visibility="private")
    # live: each slider acts when let go of (a drag sends one request, not one per step)
    for control in (*sliders, towards_amount):
        control.release(on_apply, [state, decode_mode, towards, towards_amount, *sliders],
                        [state, plot, status] + decoded_outputs, api_visibility="private")
    towards.input(on_apply, [state, decode_mode, towards, towards_amount, *sliders],
                  [state, plot, status] + decoded_outputs, api_visibility="private")


def build_axes_map(engine: StudioEngine, reason: str) -> None:
    """Without a VAE map: the corpus placed by the analyzer's axes, and a note on how to get the real one."""
    gr.Markdown(f"**No latent map:** {reason}\n\nMeanwhile, here is the corpus placed by the chromatic analyzer "
                "itself: every dot is a 4-bar segment, coloured by its mode.", elem_id="latent-missing")
    with gr.Row():
        x_axis = gr.Dropdown(AXIS_CHOICES, value="energy", label="x")
        y_axis = gr.Dropdown(AXIS_CHOICES, value="valence", label="y")
        index = gr.Number(label="Segment number", precision=0, minimum=0)
        open_button = gr.Button("Open segment")
    plot = gr.Plot(value=axes_map_figure(engine, "energy", "valence"), label="Corpus by analyzer axes")
    with gr.Row():
        roll = gr.Plot(label="Piano roll")
        with gr.Column():
            audio = gr.Audio(type="filepath", interactive=False, label="Listen")
            readout = gr.Markdown()

    @guarded(lambda message: (None, None, message))
    def open_segment(i):
        view = engine.segment_view(int(i or 0))
        return (piano_roll_figure(view.notes, view.title, view.color), engine.render_segment(view.index),
                analysis_markdown(view.analysis, view.color, view.facts))

    x_axis.change(lambda x, y: axes_map_figure(engine, x, y), [x_axis, y_axis], plot, api_visibility="private")
    y_axis.change(lambda x, y: axes_map_figure(engine, x, y), [x_axis, y_axis], plot, api_visibility="private")
    open_button.click(open_segment, index, [roll, audio, readout], api_visibility="private")
