"""What the engine API hands the studio: plain dataclasses of lists, numbers and paths (no torch), shared by
engines/api/, engines/explorer.py and engines/sessions/ so that none of them imports another."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.music.notes import TICKS_PER_QUARTER


@dataclass
class NoteView:
    """Notes for drawing, in quarter notes: parallel lists."""

    start: list[float]
    duration: list[float]
    pitch: list[int]
    velocity: list[int]
    bar_lines: list[float]          # quarter-note positions of bar starts
    regions: list[dict]             # [{"start", "end", "mode", "color", "label"}] coloured spans
    qpm: float | None = None        # the tempo its audio plays at (a playhead follows it); None: unknown


@dataclass
class SegmentView:
    index: int
    title: str
    mode: str
    color: str
    analysis: dict
    notes: NoteView
    midi_path: str
    facts: dict                     # piece, collection, bars, time signature, tempo, key, split


@dataclass
class GenerationProgress:
    """One step of a running generation, for the live view: a denoising step (diffusion) or a token
    written (autoregressive: the roll grows as the MIDI span does)."""

    step: int                        # steps (tokens) done, 1..total
    total: int
    sounding: np.ndarray             # (n, steps, pitches) float32 in [0, 1]: the current x0's sustain channel,
                                     # or the notes written so far
    bar_steps: list[int]             # roll steps in one bar of each variation (its metre), for bar lines


@dataclass
class GeneratedView:
    title: str
    requested_mode: str
    analysis: dict | None            # None when the model decoded an empty segment
    color: str
    notes: NoteView
    midi_path: str
    wav_path: str | None
    codec_wav_path: str | None = None  # the FluidSynth render through the audio codec (autoregressive results)
    audio_tokens: int = 0              # codec tokens that render became
    model_audio_wav_path: str | None = None  # the GPT's own audio tokens for the opening seconds, decoded
    model_audio_tokens: int = 0              # audio tokens the GPT wrote for it
    model_audio_seconds: float = 0.0         # the seconds they cover
    verification: dict | None = None   # how it was chosen (engines/generation/verify.Verification)
    asked: dict | None = None          # the attributes the request asked for (analyzer scale), to set beside the heard
    stopped: bool = False              # Stop ended the run: this is what the model had then
    bars_written: int | None = None    # of a stopped result: bars up to its last note (None: not stopped)
    bars: int = 4                      # the bars it was asked for


@dataclass
class GenerationResult:
    """The end of a generation stream: the results and one line on how they were checked."""

    views: list[GeneratedView]
    summary: str                     # e.g. "5 of 8 candidates heard as RED by the judge; showing the best 1."
    asked_mode: str
    candidates: int                  # per result (1: unchecked)
    stopped: bool = False            # Stop ended sampling early
    replaced: bool = False           # a newer request of the same user (run_id) stopped it; it has no views
    verification: dict = field(default_factory=dict)  # drawn, heard, rejected_copies


@dataclass
class ArrangementView:
    """An arranged piece (engines/api/arrange.py): what the Arrange tab shows of it, and the piece itself to hand
    back when one of its sections is regenerated."""

    sections: list[dict]             # per section: number, asked, heard, bars, engine, seconds, color, metre ...
    joins: list[dict]                # per join: after_section, axis_jump, density_jump
    notes: NoteView                  # the whole piece: a region per section in its asked mode's colour
    midi_path: str                   # tempo, metre and key events, a marker at each section's start
    wav_path: str | None             # None: no notes at all
    report_path: str                 # the report as JSON (what the arrange command writes)
    plan_path: str                   # the plan it was written to, as a plan file
    seconds: float                   # writing it (a regeneration: its section and the join after it)
    seed: int
    regenerations: int               # sections regenerated since it was first written
    corpus_joins: dict               # the corpus's own jumps at phrase boundaries (medians), to set beside
    stopped: bool = False            # Stop ended it before every planned section was written
    piece: object = None             # the engine's piece, for arrange_regenerate (the studio does not look inside)


@dataclass
class UploadView:
    name: str
    segments: list[dict]            # one analysis dict per segment (as `analyze --json`)
    notes: NoteView
    wav_path: str
    midi_path: str
    excerpt: str = ""               # when only the start of a long file was analysed, what to tell the user
    tracks: list = field(default_factory=list)   # (label, value) of what it can be analysed as (track_choices)
    track: str = "all"              # the value analysed


def note_view(notes: np.ndarray, bar_length: int, num_bars: int, regions: list[dict] | None = None,
              qpm: float | None = None) -> NoteView:
    q = float(TICKS_PER_QUARTER)
    return NoteView(start=(notes["start"] / q).tolist(), duration=(notes["duration"] / q).tolist(),
                    pitch=notes["pitch"].astype(int).tolist(), velocity=notes["velocity"].astype(int).tolist(),
                    bar_lines=[i * bar_length / q for i in range(num_bars + 1)], regions=regions or [], qpm=qpm)
