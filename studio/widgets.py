"""Formatting shared by the tabs: the piano-roll figure, the analyzer readout, mode chips, error guard."""
from __future__ import annotations

import base64
import functools
import logging

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from engines.errors import StudioError
from engines.music.features import PITCH_NAMES

LOG = logging.getLogger("studio")

# Every figure of the studio: transparent paper and a faint grey plot area, grey grid and text, so that rolls,
# maps and heatmaps read on the light theme and on the dark one (app.CSS lifts plot text there).
GRID = "rgba(128,128,128,0.3)"
STUDIO_TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
STUDIO_TEMPLATE.layout.update(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(128,128,128,0.06)",
                              font=dict(color="#6b7280"))
for _axis in (STUDIO_TEMPLATE.layout.xaxis, STUDIO_TEMPLATE.layout.yaxis):
    _axis.update(gridcolor=GRID, linecolor=GRID, zerolinecolor=GRID)
pio.templates["studio"] = STUDIO_TEMPLATE
pio.templates.default = "studio"

AXIS_LABELS = {"energy": "Energy", "valence": "Valence", "tension": "Tension", "intimacy": "Intimacy",
               "motion": "Motion"}


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 segment', '3 segments' (`plural` for nouns that do not take an s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def pitch_label(pitch: int) -> str:
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def piano_roll_figure(notes, title: str = "", color: str = "#1f77b4", height: int = 340,
                      grow: bool = True) -> go.Figure:
    """Notes (engines.api.NoteView) as horizontal bars: x in quarter notes, y in MIDI pitch.

    Bars are coloured by the mode of the region (segment) they start in, one legend entry per mode however many
    segments a whole song has (hovering a note names its segment); opacity follows velocity. Bar lines are
    drawn as thin vertical rules, segment boundaries a little stronger. A wide pitch range gets a taller
    figure, so notes stay a few pixels high (unless `grow` is False: cards of a grid keep one height).
    """
    fig = go.Figure()
    regions = notes.regions or [{"start": 0.0, "end": float("inf"), "color": color, "label": ""}]
    groups: dict[str, dict] = {}   # mode (or label) -> the notes of every region in it
    for region in regions:
        picked = [i for i, s in enumerate(notes.start) if region["start"] <= s < region["end"]]
        key = region.get("mode") or region.get("label", "")
        group = groups.setdefault(key, {"color": region["color"], "notes": [], "labels": []})
        group["notes"] += picked
        group["labels"] += [region.get("label") or key] * len(picked)
    for key, group in groups.items():
        if not group["notes"]:
            continue
        picked = group["notes"]
        fig.add_trace(go.Bar(
            x=[notes.duration[i] for i in picked], base=[notes.start[i] for i in picked],
            y=[notes.pitch[i] for i in picked], orientation="h", width=0.85,
            marker=dict(color=group["color"], opacity=0.9, line=dict(width=0.5, color="#222")), name=key,
            customdata=[[pitch_label(notes.pitch[i]), notes.velocity[i], label]
                        for i, label in zip(picked, group["labels"])],
            hovertemplate="%{customdata[0]} · beat %{base:.2f} · %{x:.2f} q · vel %{customdata[1]}"
                          + ("<br>%{customdata[2]}" if len(regions) > 1 else "") + "<extra></extra>",
        ))
    # One layout update for all lines: add_vline per bar is quadratic in the number of bars.
    boundaries = {r["start"] for r in regions[1:]} if len(regions) > 1 else set()
    fig.update_layout(shapes=[dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                                   line=dict(width=1.5 if x in boundaries else 1,
                                             color="rgba(128,128,128,0.8)" if x in boundaries else GRID))
                              for x in sorted(set(notes.bar_lines) | boundaries)])
    pitches = notes.pitch or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    ticks = [p for p in range(low, high + 1) if p % 12 in (0, 7)]
    legend = len(fig.data) > 1
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)),
        height=max(height, min(6 * (high - low) + 120, 720)) if grow else height,
        barmode="overlay", bargap=0,
        margin=dict(l=50, r=10, t=(40 if title else 10) + (30 if legend else 0), b=40), showlegend=legend,
        # above the plot, under the title: a legend below it covers the axis title
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
        xaxis=dict(title="quarter notes", zeroline=False), dragmode="pan",
        meta={"qpm": notes.qpm},   # what the playhead (PLAYHEAD_JS below) turns seconds of audio into quarters with
        yaxis=dict(range=[low, high], tickvals=ticks, ticktext=[pitch_label(p) for p in ticks], title=None),
    )
    return fig


# A playhead over a piano roll while its audio plays: the roll of `<x>-roll[-N]` follows the player of
# `<x>-audio[-N]`. Gradio's player (WaveSurfer) keeps its media element to itself, so the element a Play click
# starts is caught when it plays, and its time is turned into quarter notes with the tempo the figure carries
# (layout.meta.qpm). Drawn as a thin line over the plot area; hidden when the music ends (the render's tail).
PLAYHEAD_JS = """
<script>
(() => {
  let pending = null;
  document.addEventListener('click', (event) => {
    const player = event.target.closest('[id$="-audio"], [id*="-audio-"]');
    if (player && /-audio(-\\d+)?$/.test(player.id)) pending = player.id.replace('-audio', '-roll');
  }, true);
  function draw(media) {
    const plot = document.querySelector(`#${media.__studioRoll} .js-plotly-plot`);
    if (!plot || !plot._fullLayout || !plot._fullLayout.xaxis) return;
    const qpm = (plot.layout.meta || {}).qpm;
    if (!qpm) return;
    let head = plot.querySelector('.studio-playhead');
    if (!head) {
      head = document.createElement('div');
      head.className = 'studio-playhead';
      head.style.cssText = 'position:absolute;width:2px;background:#e11d48;pointer-events:none;z-index:5';
      plot.style.position = 'relative';
      plot.appendChild(head);
    }
    const axis = plot._fullLayout.xaxis, size = plot._fullLayout._size;
    const quarters = media.currentTime * qpm / 60;
    head.dataset.quarters = quarters.toFixed(3);
    head.style.display = (media.ended || quarters > axis.range[1]) ? 'none' : 'block';
    head.style.left = `${size.l + axis.d2p(quarters)}px`;
    head.style.top = `${size.t}px`;
    head.style.height = `${size.h}px`;
  }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function (...args) {
    if (pending !== null) {
      this.__studioRoll = pending;
      if (!this.__studioWatched) {
        this.__studioWatched = true;
        for (const kind of ['timeupdate', 'seeked', 'ended']) this.addEventListener(kind, () => draw(this));
      }
    }
    pending = null;
    return play.apply(this, args);
  };
})();
</script>
"""


def live_roll(sounding: np.ndarray, bar_steps: list[int], color: str, pitch_low: int = 21,
              shown: tuple[int, int] = (36, 96), bars: int = 4) -> dict:
    """The live view of a running sampler, for the page to draw (LIVE_ROLL_JS): each variation's current
    estimate (diffusion) or its notes so far (GPT) as levels 0-255, pitches `shown` (C2..C7) from the top down.
    sounding (n, steps, pitches) in [0, 1], the roll's lowest pitch `pitch_low` -> a dict of plain values:
    levels is base64 of uint8 (n, pitches, steps). A few kilobytes, sent as they are: no picture is encoded,
    cached in Gradio's folder and fetched by the page per view."""
    n, steps, pitches = sounding.shape
    low, high = max(shown[0] - pitch_low, 0), min(shown[1] - pitch_low, pitches - 1)
    levels = np.clip(sounding[:, :, low:high + 1], 0, 1)[:, :, ::-1].transpose(0, 2, 1)   # (n, pitches, steps)
    return {"color": color, "n": int(n), "steps": int(steps), "pitches": int(high - low + 1), "bars": int(bars),
            "bar_steps": [int(b) for b in bar_steps],
            "levels": base64.b64encode(np.round(levels * 255).astype(np.uint8).tobytes()).decode("ascii")}


# Draws live_roll's dict in the page: two variations a row, each a tile framed in grey, transparent (silence)
# to the mode's colour (sounding) so that it reads on the light and the dark theme; grey bar lines, a faint
# line per octave, the steps past the last bar (padding of shorter metres) shaded. One pixel per step and
# pitch; CSS scales the canvas up (pixelated), each cell 3 wide and 2 high. null clears it.
LIVE_ROLL_JS = """
function draw() {
  const canvas = element.querySelector('canvas'), roll = props.value;   // the template may have re-rendered
  if (!roll || !roll.levels) { canvas.style.display = 'none'; canvas.removeAttribute('data-drawn'); return; }
  const bytes = Uint8Array.from(atob(roll.levels), c => c.charCodeAt(0));
  const tileW = roll.steps + 2, tileH = roll.pitches + 2, rows = Math.ceil(roll.n / 2);
  const width = 2 * tileW, height = rows * tileH;
  canvas.width = width; canvas.height = height;
  canvas.style.aspectRatio = (width * 3) + ' / ' + (height * 2);
  const image = new ImageData(width, height);
  const rgb = [1, 3, 5].map(i => parseInt(roll.color.slice(i, i + 2), 16));
  for (let k = 0; k < roll.n; k++) {
    const left = (k % 2) * tileW, top = Math.floor(k / 2) * tileH, bar = Math.max(roll.bar_steps[k], 1);
    const lastBar = Math.min(roll.bars, Math.floor(roll.steps / bar)) * bar;
    for (let y = 0; y < tileH; y++) for (let x = 0; x < tileW; x++) {
      const at = 4 * ((top + y) * width + left + x);
      if (y === 0 || x === 0 || y === tileH - 1 || x === tileW - 1) {   // the variation's frame
        image.data.set([128, 128, 128, 90], at); continue;
      }
      const p = y - 1, t = x - 1, level = bytes[(k * roll.pitches + p) * roll.steps + t] / 255;
      let backdrop = t >= roll.bars * bar ? 50 : 0;                            // padding
      if (t > 0 && t < lastBar && t % bar === 0) backdrop = 110;               // bar line
      if (p % 12 === 0) backdrop = Math.max(backdrop, 35);                     // octave line
      const alpha = level * 255 + (1 - level) * backdrop;
      const mix = c => alpha > 0 ? (level * 255 * c + (1 - level) * backdrop * 128) / alpha : 0;
      image.data.set([mix(rgb[0]), mix(rgb[1]), mix(rgb[2]), alpha], at);
    }
  }
  canvas.getContext('2d').putImageData(image, 0, 0);
  canvas.style.display = 'block';
  canvas.setAttribute('data-drawn', String(Date.now()));
}
watch('value', draw);
draw();
"""


def progress_html(step: int, total: int, label: str) -> str:
    return (f"<div class='denoise-progress'><progress value='{step}' max='{total}' style='width:100%'></progress>"
            f"<div>{label}</div></div>")


def mode_chip(mode: str, color: str) -> str:
    text = "#111" if mode in ("YELLOW", "WHITE", "ORANGE") else "#fff"
    return (f"<span class='mode-chip' style='background:{color};color:{text};padding:2px 10px;"
            f"border-radius:10px;font-weight:600'>{mode}</span>")


def analysis_markdown(analysis: dict, color: str, facts: dict | None = None, heading: bool = True,
                      asked: dict | None = None) -> str:
    """The analyzer's readout as Markdown: mode and key (the heading), the five axes, rebracketing, temporal
    complexity; with `asked` (what the request asked for), an "asked" column beside what is heard."""
    lines = [f"### {mode_chip(analysis['mode'], color)} &nbsp; {analysis.get('key', '')}"] if heading else []
    if facts:
        lines.append(" · ".join(f"**{k.replace('_', ' ')}** {v}" for k, v in facts.items()))
    asked = asked or {}
    lines.append("")
    lines.append("| axis | heard | | asked |" if asked else "| axis | value | |")
    lines.append("|---|---:|---|---:|" if asked else "|---|---:|---|")
    rows = [(AXIS_LABELS[axis], axis, value) for axis, value in analysis["axes"].items()]
    rows += [("Rebracketing", "rebracketing", analysis["rebracketing"]),
             ("Temporal complexity", "temporal_complexity", analysis["temporal_complexity"])]
    for label, name, value in rows:
        signed = name == "valence"
        unit = (value + 1) / 2 if signed else value
        shown = f"{value:+.2f}" if signed else f"{value:.2f}"
        cells = f"| {label} | {shown} | {_meter(unit)} |"
        if asked:
            target = asked.get(name)
            cells += (" – |" if target is None else f" {target:+.2f} |" if signed else f" {target:.2f} |")
        lines.append(cells)
    if analysis.get("label_source") == "manifest":
        lines.append("\n*Label from your CSV manifest, not the analyzer.*")
    return "\n".join(lines)


def _meter(unit: float, width: int = 12) -> str:
    filled = int(round(max(0.0, min(1.0, unit)) * width))
    return "█" * filled + "░" * (width - filled)


def error_markdown(message: str) -> str:
    return f"<div class='studio-error' role='alert'>⚠️ {message}</div>"


def guarded(on_error):
    """Decorate a handler so that no exception reaches the user as a bare "Error".

    A StudioError (bad input) shows its own message; anything else is logged with its traceback and shown
    as a short apology. `on_error(message_html)` returns the handler's outputs for that case.
    """
    def wrap(handler):
        @functools.wraps(handler)
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as exc:
                return on_error(_error_message(handler, exc))
        return run
    return wrap


def guarded_stream(on_error):
    """`guarded` for a generator handler (one that streams updates): an error while it runs ends the stream
    with `on_error(message_html)`; the wrapper is itself a generator function, so Gradio streams it."""
    def wrap(handler):
        @functools.wraps(handler)
        def run(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as exc:
                yield on_error(_error_message(handler, exc))
        return run
    return wrap


def _error_message(handler, exc: Exception) -> str:
    """A StudioError (bad input) shows its own message; anything else is logged with its traceback and shown
    as a short apology."""
    if isinstance(exc, StudioError):
        return error_markdown(str(exc))
    LOG.error("handler %s failed", handler.__name__, exc_info=exc)  # the last resort: log it, keep serving
    # The exception's own text stays in the log: it may name paths, hosts or users, and anyone may be reading
    return error_markdown(f"Something went wrong ({type(exc).__name__}). The studio logged it and carries on.")


def api_errors(fn):
    """Decorate a public API function (gr.api) so that its clients read the reason: a StudioError becomes a
    gr.Error with its message; anything else is logged and becomes a short apology naming no path or host."""
    import gradio as gr

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001
            LOG.error("API function %s failed", fn.__name__, exc_info=exc)
            raise gr.Error("something went wrong on the studio's side; it is logged, please try again",
                           print_exception=False) from None
    return run
