"""Offline audio rendering of symusic Scores through FluidSynth.

The flow, top to bottom:
  find_soundfont   -> which .sf2/.sf3 to use (explicit path, repo, system folders, pretty_midi's TimGM6mb)
  SynthPool        -> a few FluidSynth synths with that soundfont loaded once, reused across renders
  render_score     -> Score -> sorted MIDI events -> step the synth from event to event -> float32 stereo
  write_audio      -> WAV/FLAC files, or WAV bytes for the UI

Why offline stepping rather than FluidSynth's own MIDI player: we never start an audio driver and never
wait on a clock, so a render runs as fast as the synth can compute samples (far faster than real time),
and it works on headless servers. Tempo changes are resolved by symusic's `score.to("second")`.

Renders are dry: FluidSynth's reverb and chorus are switched off (SYNTH_SETTINGS). With libfluidsynth
2.3 a system reset does not clear the reverb's state, so a pooled synth would carry a faint (about -55 dB)
tail of the previous piece into the next render; dry renders start from true silence every time.
"""
from __future__ import annotations

import ctypes
import io
import math
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from engines.errors import StudioError

REPO_ROOT = Path(__file__).resolve().parents[2]  # engines/render/<this file> -> repo root
SYSTEM_SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3",
                         "/usr/share/soundfonts", "/usr/local/share/soundfonts")
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")
DRUM_CHANNEL = 9  # General MIDI: channel 10 (index 9) plays the percussion bank
MIDI_CHANNELS = 16
MELODIC_CHANNELS = tuple(c for c in range(MIDI_CHANNELS) if c != DRUM_CHANNEL)
# Controllers we pass through. Sustain (64) arrives via track.pedals instead (symusic lists it in both
# places, so taking it from controls too would double it); bank selects are left out so a stray one
# cannot move a track off the General MIDI bank or the drum kit off bank 128.
PASSED_CONTROLLERS = frozenset({1, 7, 10, 11, 91, 93})  # modulation, volume, pan, expression, reverb, chorus
SUSTAIN_CC = 64
# FluidSynth computes audio in blocks of this many frames; see SynthPool for why it matters.
FLUID_BLOCK = 64
# dry (see the module docstring); samples loaded as presets are used, so a General MIDI soundfont costs the
# studio the few MB of the instruments it plays, not its whole 140 MB (the audio is the same, sample for sample)
SYNTH_SETTINGS = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 1}
# Order of simultaneous events: set the instrument first, then controllers, release old notes, start new ones
# (so a repeated pitch is re-struck rather than cut off by its predecessor's note-off).
_PROGRAM, _CONTROL, _BEND, _NOTE_OFF, _NOTE_ON = range(5)


# ---------------------------------------------------------------------------------------------- soundfont
def find_soundfont(explicit: str = "") -> Path:
    """The soundfont to render with: `explicit` if given, else the first one found on the search path."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.suffix.lower() not in SOUNDFONT_SUFFIXES:
            raise StudioError(f"soundfont '{path}' is not a .sf2 or .sf3 file; pass a SoundFont file")
        if not path.is_file():
            raise StudioError(f"soundfont '{path}' does not exist; check the path or leave it empty "
                              f"to use the default soundfont")
        return path
    for folder in (REPO_ROOT / "soundfonts", *map(Path, SYSTEM_SOUNDFONT_DIRS)):
        if folder.is_dir():
            # is_file() follows symlinks, so a dangling /etc/alternatives link is skipped.
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in SOUNDFONT_SUFFIXES and p.is_file())
            if found:
                return found[0]
    # Last resort: the small GM soundfont bundled with pretty_midi. find_spec locates the package without
    # importing it (importing pretty_midi pulls in a lot we do not need).
    import importlib.util

    spec = importlib.util.find_spec("pretty_midi")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "TimGM6mb.sf2"
        if candidate.is_file():
            return candidate
    raise StudioError("no soundfont found: put a .sf2/.sf3 file in the repo's soundfonts/ folder, install "
                      "one (e.g. apt-get install fluid-soundfont-gm), or pass an explicit soundfont path")


# --------------------------------------------------------------------------------------- fluidsynth wrapper
_FLUID = None
_FLUID_LOCK = threading.Lock()


def _fluidsynth():
    """(pyfluidsynth module, fluid_synth_write_float), imported on first use so the rest of the app (and its
    tests) never needs libfluidsynth. We call write_float ourselves: pyfluidsynth only exposes the int16
    writer, which dithers (so two identical renders differ in their last bit), clips at 16 bits, and copies
    through a temporary buffer; write_float writes straight into our numpy array."""
    global _FLUID
    with _FLUID_LOCK:
        if _FLUID is None:
            try:
                import fluidsynth
            except (ImportError, OSError) as exc:  # OSError: the Python package is there, libfluidsynth is not
                raise StudioError(f"audio rendering needs FluidSynth (pip install pyfluidsynth and the "
                                  f"libfluidsynth system library): {exc}") from None
            c_int, c_void_p = ctypes.c_int, ctypes.c_void_p
            write_float = fluidsynth.cfunc(
                "fluid_synth_write_float", c_int, ("synth", c_void_p, 1), ("len", c_int, 1),
                ("lout", c_void_p, 1), ("loff", c_int, 1), ("lincr", c_int, 1),
                ("rout", c_void_p, 1), ("roff", c_int, 1), ("rincr", c_int, 1))
            _FLUID = (fluidsynth, write_float)
        return _FLUID


class SynthPool:
    """Up to `size` FluidSynth synths sharing one soundfont, sample rate and gain; thread-safe.

    Creating a synth and loading a soundfont costs far more than a short render, so synths are made on
    first demand and then reused. `with pool.synth() as s:` lends one synth exclusively (waiting if all are
    busy) after a full MIDI reset. A synth whose render raised is deleted rather than returned, since its
    state is unknown.

    Renders must consume whole multiples of FLUID_BLOCK frames: FluidSynth keeps the unread rest of its
    last computed block and hands it out first on the next call, so a render that stopped mid-block would
    leak its last samples into the next render and shift that render's events against the block grid.
    """

    def __init__(self, soundfont: str | Path, sample_rate: int = 44100, gain: float = 0.5, size: int = 2):
        if not 8000 <= sample_rate <= 96000:  # FluidSynth silently ignores rates outside its range
            raise StudioError(f"sample rate {sample_rate} Hz is outside FluidSynth's 8000..96000 Hz")
        self.soundfont = str(soundfont)
        self.sample_rate, self.gain, self.size = int(sample_rate), float(gain), max(1, int(size))
        self._idle: list = []      # synths ready to lend, most recently returned last
        self._created: list = []   # every live synth, lent or idle
        self._building = 0         # synths being created right now (counted against size)
        self._cond = threading.Condition()

    @property
    def synths(self) -> tuple:
        """Every live synth (for tests and diagnostics)."""
        with self._cond:
            return tuple(self._created)

    def _new_synth(self):
        fluidsynth, _ = _fluidsynth()
        synth = fluidsynth.Synth(gain=self.gain, samplerate=self.sample_rate, channels=MIDI_CHANNELS,
                                 **SYNTH_SETTINGS)
        if synth.sfload(self.soundfont) < 0:  # FluidSynth caches sample data, so later loads are cheap
            synth.delete()
            raise StudioError(f"soundfont '{self.soundfont}' could not be loaded by FluidSynth; "
                              f"it may be corrupt or not a SoundFont")
        return synth

    @contextmanager
    def synth(self):
        """Lend one reset synth for the duration of the `with` block."""
        with self._cond:
            while not self._idle and len(self._created) + self._building >= self.size:
                self._cond.wait()
            synth = self._idle.pop() if self._idle else None
            if synth is None:
                self._building += 1  # reserve the slot, then load the soundfont outside the lock
        if synth is None:
            try:
                synth = self._new_synth()
            finally:
                with self._cond:
                    self._building -= 1
                    if synth is not None:
                        self._created.append(synth)
                    self._cond.notify()
        try:
            _reset(synth)
            yield synth
        except BaseException:
            with self._cond:
                self._created.remove(synth)
                self._cond.notify()
            synth.delete()
            raise
        with self._cond:
            self._idle.append(synth)
            self._cond.notify()

    def close(self) -> None:
        """Delete the idle synths (lent ones are left to their borrowers)."""
        with self._cond:
            idle, self._idle = self._idle, []
            for synth in idle:
                self._created.remove(synth)
        for synth in idle:
            synth.delete()


def _reset(synth) -> None:
    """Silence every voice and restore programs and controllers (sustain included) to their defaults.

    system_reset alone is not enough: in libfluidsynth 2.3 it lets voices that were still sounding or
    releasing carry on into the next render (FluidSynth issue #964), so sounds are cut before and after it.
    The cuts take effect when the next block is computed, i.e. before the next render's first sample.
    """
    synth.all_sounds_off(-1)  # -1: every channel
    synth.system_reset()
    synth.all_sounds_off(-1)


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def get_pool(soundfont: str = "", sample_rate: int = 44100, pool_size: int = 2, gain: float = 0.5) -> SynthPool:
    """The shared pool for (soundfont, sample rate, gain); a larger pool_size than before grows it."""
    path = str(find_soundfont(soundfont).resolve())
    key = (path, int(sample_rate), float(gain))
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = SynthPool(path, sample_rate, gain, pool_size)
    with pool._cond:
        if pool_size > pool.size:
            pool.size = int(pool_size)
            pool._cond.notify_all()
    return pool


# -------------------------------------------------------------------------------------------------- render
def _score_events(score, sample_rate: int) -> tuple[list, float]:
    """Score (any time unit) -> (events sorted by frame, end in seconds). An event is
    (frame, kind, channel, a, b): kind orders simultaneous events, a/b are the MIDI data bytes."""
    seconds = score.to("second")  # resolves every tempo change
    events, melodic_index = [], 0
    for track in seconds.tracks:
        if track.is_drum:
            channel = DRUM_CHANNEL  # FluidSynth treats channel 9 as drums: program_change picks bank 128
        else:
            # More than 15 melodic tracks share channels; the later track's program then wins there.
            channel = MELODIC_CHANNELS[melodic_index % len(MELODIC_CHANNELS)]
            melodic_index += 1
        events.append((0, _PROGRAM, channel, int(track.program), 0))
        for note in track.notes:
            start = round(note.time * sample_rate)
            end = max(start + 1, round((note.time + note.duration) * sample_rate))  # 0-length notes still sound
            velocity = min(127, max(1, note.velocity))  # velocity 0 would mean note-off to FluidSynth
            events.append((start, _NOTE_ON, channel, note.pitch, velocity))
            events.append((end, _NOTE_OFF, channel, note.pitch, 0))
        for pedal in track.pedals:
            events.append((round(pedal.time * sample_rate), _CONTROL, channel, SUSTAIN_CC, 127))
            events.append((round((pedal.time + pedal.duration) * sample_rate), _CONTROL, channel, SUSTAIN_CC, 0))
        for control in track.controls:
            if control.number in PASSED_CONTROLLERS:
                events.append((round(control.time * sample_rate), _CONTROL, channel, control.number, control.value))
        for bend in track.pitch_bends:
            events.append((round(bend.time * sample_rate), _BEND, channel, bend.value, 0))
    events.sort()
    return events, float(seconds.end())


def _apply(synth, kind: int, channel: int, a: int, b: int) -> None:
    if kind == _NOTE_ON:
        synth.noteon(channel, a, b)
    elif kind == _NOTE_OFF:
        synth.noteoff(channel, a)
    elif kind == _CONTROL:
        synth.cc(channel, a, b)
    elif kind == _BEND:
        synth.pitch_bend(channel, a)  # pyfluidsynth adds the 8192 centre offset
    else:
        synth.program_change(channel, a)


def render_score(score, sample_rate: int = 44100, soundfont: str = "", gain: float = 0.5,
                 tail_seconds: float = 1.0, pool_size: int = 2) -> np.ndarray:
    """Render a symusic Score to float32 stereo audio of shape (frames, 2) in [-1, 1].

    frames = ceil((score end in seconds + tail_seconds) * sample_rate); the tail lets the last notes ring
    out through their release. Events are placed on the nearest frame, and FluidSynth applies them at its next 64-frame
    block (at most 1.5 ms late at 44.1 kHz).
    """
    events, end_seconds = _score_events(score, sample_rate)
    frames = math.ceil((end_seconds + max(0.0, tail_seconds)) * sample_rate)
    padded = -(-frames // FLUID_BLOCK) * FLUID_BLOCK  # whole blocks; see SynthPool
    audio = np.zeros((padded, 2), dtype=np.float32)
    base = audio.ctypes.data
    _, write_float = _fluidsynth()

    def render_until(synth, position: int, target: int) -> int:
        target = min(target, padded)
        if target > position:
            # Interleaved stereo: left at even floats, right at odd, written in place into `audio`.
            pointer = base + position * 2 * audio.itemsize
            write_float(synth.synth, target - position, pointer, 0, 2, pointer, 1, 2)
        return max(position, target)

    with get_pool(soundfont, sample_rate, pool_size, gain).synth() as synth:
        position = 0
        for frame, kind, channel, a, b in events:
            position = render_until(synth, position, frame)
            _apply(synth, kind, channel, a, b)
        render_until(synth, position, padded)
    # Chords at gain 0.5 can exceed full scale; clip rather than let WAV/FLAC writers wrap around.
    return np.clip(audio[:frames], -1.0, 1.0, out=audio[:frames])


def render_midi_file(path, sample_rate: int = 44100, soundfont: str = "", gain: float = 0.5,
                     tail_seconds: float = 1.0, pool_size: int = 2) -> np.ndarray:
    """Load and validate a MIDI file (StudioError if it is bad), then render it like render_score."""
    from engines.data.midi_io import load_midi_score

    return render_score(load_midi_score(path), sample_rate, soundfont, gain, tail_seconds, pool_size)


# --------------------------------------------------------------------------------------------------- output
_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def _pcm16_ready(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise StudioError(f"audio must be (frames,) or (frames, channels); got shape {audio.shape}")
    return np.clip(audio, -1.0, 1.0)


def write_audio(audio: np.ndarray, path, sample_rate: int = 44100) -> Path:
    """Write float audio as 16-bit PCM; the suffix (.wav or .flac) picks the format."""
    import soundfile

    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise StudioError(f"cannot write audio to '{path.name}': use a .wav or .flac file name")
    if not path.parent.is_dir():
        raise StudioError(f"cannot write audio to '{path}': the folder '{path.parent}' does not exist")
    soundfile.write(str(path), _pcm16_ready(audio), int(sample_rate), subtype="PCM_16", format=fmt)
    return path


def audio_to_wav_bytes(audio: np.ndarray, sample_rate: int = 44100) -> bytes:
    """16-bit PCM WAV file contents, for serving audio without touching the disk."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, _pcm16_ready(audio), int(sample_rate), subtype="PCM_16", format="WAV")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- benchmark
def measure_speed(score, repeats: int = 3, **render_kwargs) -> dict:
    """Time render_score on `score`: one untimed warm-up (pool creation and soundfont loading are one-off
    costs), then the median of `repeats` timed renders. x_realtime = audio seconds / render seconds."""
    sample_rate = render_kwargs.get("sample_rate", 44100)
    audio = render_score(score, **render_kwargs)
    timings = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        render_score(score, **render_kwargs)
        timings.append(time.perf_counter() - started)
    audio_seconds = len(audio) / sample_rate
    median = statistics.median(timings)
    return {"audio_seconds": audio_seconds, "median_render_seconds": median,
            "x_realtime": audio_seconds / median if median > 0 else float("inf")}
