"""What a musician sets besides the mode and the attributes, checked once and honoured alike by every engine.

    tempo       quarter notes per minute, 30-300: the results' tempo (else the one the engine writes: the
                mode's median, or the GPT's Tempo token)
    metre       one the corpus has ("3/4", METRE_NAMES): each engine writes it (the diffusion denoiser is
                conditioned on it, the GPT's first bar opens with its TimeSig token, the VAE draws latents until
                its metre head writes it); a segment to start from keeps its own
    scale       "major" or "minor": a result heard in the other is moved to the parallel key
                (engines/music/performance.in_scale)
    instrument  General MIDI program 1-128 (1 = acoustic grand piano, 41 = violin): the MIDI's program, which
                FluidSynth plays
    dynamics    pp, p, mp, mf, f, ff: notes all at one velocity (the roll engines write no dynamics, and a
                model trained on the music21 corpus learned none) are shaped around that level (mf when none
                is asked; performance.shape_dynamics); velocities that vary are scaled to it

`perform` applies them to every candidate as it is drawn (engines/generation/verify.py), before the judge
ranks them: tempo, key and loudness change what it and the analyzer hear.
"""
from __future__ import annotations

from dataclasses import replace

from engines.errors import StudioError
from engines.music.notes import METRES, Segment
from engines.music.performance import at_level, check_dynamics, check_scale, in_scale, shape_dynamics

METRE_NAMES = tuple(f"{a}/{b}" for a, b in METRES)
TEMPO_RANGE = (30.0, 300.0)
GM_PROGRAMS = 128


def metre_of(metre: str | None) -> tuple[int, int] | None:
    """"3/4" -> (3, 4); None or "" -> None; StudioError for a metre the corpus (and so the engines) lacks."""
    if metre in (None, ""):
        return None
    text = str(metre).strip().replace(" ", "")
    if text not in METRE_NAMES:
        raise StudioError(f"unknown metre '{metre}'; the engines write {', '.join(METRE_NAMES)}")
    num, den = text.split("/")
    return int(num), int(den)


def check_tempo(tempo) -> float | None:
    """A tempo in quarter notes per minute as a float (None stays None); StudioError outside TEMPO_RANGE."""
    if tempo is None:
        return None
    try:
        qpm = float(tempo)
    except (TypeError, ValueError):
        raise StudioError(f"tempo must be a number of beats per minute, got {tempo!r}") from None
    if not TEMPO_RANGE[0] <= qpm <= TEMPO_RANGE[1]:
        raise StudioError(f"tempo must lie in {TEMPO_RANGE[0]:g}..{TEMPO_RANGE[1]:g} BPM, got {qpm:g}")
    return qpm


def check_musical(request) -> None:
    """StudioError naming the first of tempo, metre, scale, instrument and dynamics a request gets wrong."""
    check_tempo(request.tempo)
    metre_of(request.metre)
    check_scale(request.scale)
    check_dynamics(request.dynamics)
    if request.instrument is not None:
        try:
            program = int(request.instrument)
        except (TypeError, ValueError):
            program = 0
        if program != request.instrument or not 1 <= program <= GM_PROGRAMS:
            raise StudioError(f"instrument must be a General MIDI program 1..{GM_PROGRAMS} (1 = piano, "
                              f"41 = violin), got {request.instrument!r}")


def check_metre_kept(request, init: Segment) -> None:
    """A segment to start from keeps its metre: StudioError when the request asks for another."""
    asked = metre_of(request.metre)
    if asked is not None and asked != (init.ts_num, init.ts_den):
        raise StudioError(f"the segment to start from is in {init.ts_num}/{init.ts_den} and keeps its metre; "
                          f"leave the metre empty or start from a segment in {request.metre}")


def perform(segment: Segment, request, low: int = 21, high: int = 108) -> Segment:
    """The segment at the request's tempo, in its scale, at its dynamics and with its instrument (module
    docstring). A result that keeps bars of a segment to start from keeps that segment's key: no scale then."""
    if request.init_midi is None:
        segment = in_scale(segment, request.scale, low, high)
    performed = len(segment.notes) and len(set(segment.notes["velocity"].tolist())) > 1
    segment = at_level(segment, request.dynamics) if performed else shape_dynamics(segment, request.dynamics)
    changes = {}
    if request.tempo is not None:
        changes["tempo_qpm"] = float(request.tempo)
    if request.instrument is not None:
        changes["meta"] = {**segment.meta, "program": int(request.instrument) - 1}
    return replace(segment, **changes) if changes else segment
