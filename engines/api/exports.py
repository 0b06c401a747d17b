"""Exports and rendering: a segment's analysis, MIDI and WAV (FluidSynth), and its audio-codec round trip.

Files are written once, under a name derived from what they hold, and atomically, so concurrent users share them.
A mixin of engines.api.StudioEngine.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from engines.analysis import analyze_segments
from engines.errors import StudioError
from engines.data.midi_io import segment_to_score, segments_to_score
from engines.folders import write_atomically
from engines.music.analyzer import MODE_COLORS
from engines.music.notes import TICKS_PER_QUARTER, Segment
from engines.views import note_view


PHRASE_BARS = 4           # a phrase played in is one segment: 4 bars of 4/4 in sixteenths
MAX_PHRASE_NOTES = 256


class ExportAPI:
    def segment_result(self, segment: Segment, name: str, download_name: str | None = None) -> dict:
        """What the studio shows of a decoded segment: analysis (None when it holds no notes), colour of the
        mode heard, notes for the roll, MIDI and WAV paths (named `download_name`.mid/.wav when given)."""
        analysis = analyze_segments([segment], self.cfg)[0] if len(segment.notes) else None
        mode = analysis["mode"] if analysis else "WHITE"
        region = [{"start": 0.0, "end": segment.length / TICKS_PER_QUARTER, "mode": mode, "color": MODE_COLORS[mode],
                   "label": mode}]
        midi, wav = self.export_segments([segment], name, download_name)
        return {"analysis": analysis, "color": MODE_COLORS[mode], "midi_path": midi, "wav_path": wav,
                "notes": note_view(segment.notes, segment.bar_length, segment.num_bars, region, segment.tempo_qpm)}

    def export_segments(self, segments: list[Segment], name: str,
                        download_name: str | None = None) -> tuple[str, str | None]:
        """MIDI and WAV of segments played one after another (each keeps its metre and tempo), written once
        under `name` plus a digest of what they hold; no WAV when they hold no notes. With `download_name`
        (e.g. "RED-diffusion-seed7-1") the files are called that, in a folder of their own."""
        digest = hashlib.sha1(b"".join(
            s.notes.tobytes() + f"{s.ts_num}/{s.ts_den}@{s.tempo_qpm}x{s.num_bars}p{s.meta.get('program', 0)}".encode()
            for s in segments
        )).hexdigest()[:16]
        midi = self._file(f"{name}-{digest}", ".mid", lambda p: segments_to_score(segments).dump_midi(str(p)),
                          download_name)
        if not any(len(s.notes) for s in segments):
            return str(midi), None
        wav = self._file(f"{name}-{digest}-{self._render_key}", ".wav",
                         lambda p: self._render_score(segments_to_score(segments), p), download_name)
        return str(midi), str(wav)

    def export_zip(self, results: list[dict], name: str = "starred-results") -> str:
        """A ZIP of results the studio made ({"midi": path, "wav": path or None, "settings": {...}} each): their
        MIDI and WAV files under their own names and `settings.json`, what made each (engine, mode, seed,
        tempo ...), so any of them can be made again. StudioError for none, or a file the studio did not write."""
        import json
        import zipfile

        if not results:
            raise StudioError("star a result first: the ZIP holds the starred results")
        root = self.out_dir.resolve()
        files = []
        for result in results:
            for key in ("midi", "wav"):
                path = result.get(key)
                if path is None:
                    continue
                path = Path(path).resolve()
                if root not in path.parents or not path.is_file():
                    raise StudioError(f"'{Path(path).name}' is not a file this studio made; generate it again")
                files.append(path)
        names = [p.name for p in files]
        manifest = [{"midi": Path(r["midi"]).name, "wav": Path(r["wav"]).name if r.get("wav") else None,
                     **r.get("settings", {})} for r in results]
        digest = hashlib.sha1(json.dumps([names, manifest], sort_keys=True).encode()).hexdigest()[:16]

        def make(path):
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                seen = set()
                for file in files:
                    if file.name not in seen:   # the same result starred twice goes in once
                        archive.write(file, file.name)
                        seen.add(file.name)
                archive.writestr("settings.json", json.dumps(manifest, indent=1))

        return str(self._file(f"zip-{digest}", ".zip", make, name))

    def phrase_midi(self, notes: list, tempo: float | None = None) -> str:
        """A phrase played in on the studio's keyboard -> a 4-bar 4/4 MIDI file (named played-phrase.mid).
        `notes`: [pitch, start step, steps] with sixteenth-note steps (0..63). StudioError naming a bad note."""
        from engines.generation.musical import check_tempo
        from engines.music.notes import NOTE_DTYPE

        steps, tick = PHRASE_BARS * 16, TICKS_PER_QUARTER // 4
        if not isinstance(notes, list) or not notes:
            raise StudioError("play a few notes first: the phrase is empty")
        if len(notes) > MAX_PHRASE_NOTES:
            raise StudioError(f"a phrase holds at most {MAX_PHRASE_NOTES} notes, got {len(notes)}")
        rows = []
        for note in notes:
            try:
                pitch, start, length = (int(v) for v in note)
            except (TypeError, ValueError):
                raise StudioError(f"a phrase note is [pitch, start step, steps], got {note!r}") from None
            if not (21 <= pitch <= 108 and 0 <= start < steps and 1 <= length <= steps - start):
                raise StudioError(f"note {note!r} lies outside the phrase: pitch 21-108, steps 0-{steps - 1}")
            rows.append((start * tick, length * tick, pitch, 90, 0))
        segment = Segment(notes=np.sort(np.array(rows, NOTE_DTYPE), order=["start", "pitch"]), ts_num=4, ts_den=4,
                          num_bars=PHRASE_BARS, tempo_qpm=check_tempo(tempo or None) or 100.0,
                          piece_id="played phrase")
        midi, _ = self.export_segments([segment], "phrase", "played-phrase")
        return midi

    def restore_midi(self, data: bytes, name: str) -> str:
        """A MIDI file a browser kept (the studio's history) written back into out_dir as `name`.mid, after
        the checks every upload passes (size, notes, readable); StudioError naming what is wrong."""
        from engines.analysis import midi_file_segments

        limit = self.cfg.data.max_file_mb * 1024 * 1024
        if not data or len(data) > limit:
            raise StudioError(f"the kept MIDI file is empty or over {self.cfg.data.max_file_mb:g} MB; "
                              "generate it again")
        digest = hashlib.sha1(data).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:80] or "history"
        path = self._file(f"history-{digest}", ".mid", lambda p: p.write_bytes(data), safe)
        try:
            midi_file_segments(path, self.cfg)
        except StudioError:
            path.unlink(missing_ok=True)
            raise
        return str(path)

    def _render_score(self, score, path: Path) -> None:
        from engines.render.fluidsynth_renderer import render_score, write_audio

        r = self.cfg.render
        audio = render_score(score, sample_rate=r.sample_rate, soundfont=r.soundfont, gain=r.gain,
                             tail_seconds=r.tail_seconds, pool_size=r.pool_size)
        write_audio(audio, path, r.sample_rate)

    def _file(self, stem: str, suffix: str, make, download_name: str | None = None) -> Path:
        """A file in out_dir made once by `make(tmp_path)`; concurrent callers never see half a file. With a
        `download_name` it is out_dir/<stem>/<download_name><suffix>: the name a browser saves it under."""
        unique = f"{stem}-{self.cache.meta.get('fingerprint', 'x')}"
        if download_name:
            (self.out_dir / unique).mkdir(exist_ok=True)
            path = self.out_dir / unique / f"{download_name}{suffix}"
        else:
            path = self.out_dir / f"{unique}{suffix}"
        return path if path.exists() else write_atomically(path, make)

    def model_audio_render(self, segment: Segment, name: str, engine: str, seed: int = 0) -> tuple | None:
        """The GPT's own audio for `segment` (its audio tokens of the opening seconds, decoded by the codec):
        (WAV path, tokens, seconds); None when the engine's checkpoint has no audio task or no matching codec."""
        model = getattr(self.models.get(engine), "model", None)
        task = getattr(model, "audio_task", None)
        if not task or not len(segment.notes):
            return None
        from engines.models.trained_autoregressive import audio_codec_problem, model_audio
        from engines.render.fluidsynth_renderer import write_audio

        c = self.cfg.model.codec
        codec = self.models.codec(c.pretrained_path, c.pretrained_bandwidth)
        if audio_codec_problem(model, codec):
            return None
        # the GPT (its training record), the codec and the render settings are all in the name: a re-shipped model
        # or another soundfont never serves an earlier file
        digest = hashlib.sha1(segment.notes.tobytes() + f"{segment.ts_num}/{segment.ts_den}@{segment.tempo_qpm}"
                              f"s{seed}{task}{model.payload.get('metrics')}".encode()).hexdigest()[:16]

        def make(path):
            own = model_audio(model, codec, segment, seed, self.cfg.render.soundfont, self.cfg.render.gain).clip(-1, 1)
            write_audio(np.repeat(own[:, None], 2, axis=1), path, codec.config.sample_rate)

        try:
            path = self._file(f"{name}-model-audio-{digest}-{self._render_key}", ".wav", make)
        except Exception as exc:  # noqa: BLE001  (the model's audio is extra: the render still plays)
            import logging

            logging.getLogger("engines.api").warning("the GPT's own audio failed: %s", exc)
            return None
        return str(path), int(task["frames"]) * int(task["codebooks"]), float(task["seconds"])

    def codec_render(self, segment: Segment, name: str) -> tuple[str | None, int]:
        """The segment rendered by FluidSynth at the codec's rate, encoded to audio tokens and decoded back:
        (WAV path, number of tokens), to hear next to the plain render. (None, 0) without a codec or notes."""
        c = self.cfg.model.codec
        codec = self.models.codec(c.pretrained_path, c.pretrained_bandwidth)
        if codec is None or not len(segment.notes):
            return None, 0
        from engines.render.fluidsynth_renderer import render_score, write_audio

        rate = codec.config.sample_rate
        digest = hashlib.sha1(segment.notes.tobytes() + f"{segment.ts_num}/{segment.ts_den}@{segment.tempo_qpm}"
                              f"{rate}{c.pretrained_path}p{segment.meta.get('program', 0)}".encode()).hexdigest()[:16]
        tokens = {}

        def make(path):
            mono = render_score(segment_to_score(segment), sample_rate=rate, soundfont=self.cfg.render.soundfont,
                                gain=self.cfg.render.gain, tail_seconds=self.cfg.render.tail_seconds).mean(axis=1)
            codes, decoded = codec.round_trip(mono)
            tokens["n"] = int(codes.numel())
            decoded = decoded.numpy().clip(-1, 1)
            write_audio(np.repeat(decoded[:, None], 2, axis=1), path, rate)

        try:
            path = self._file(f"{name}-codec-{digest}-{self._render_key}", ".wav", make)
        except Exception as exc:  # noqa: BLE001  (the codec is optional: the plain render still plays)
            import logging

            logging.getLogger("engines.api").warning("codec round trip failed: %s", exc)
            return None, 0
        if "n" not in tokens:  # made earlier: the token count follows from the file's length
            import soundfile

            frames = math.ceil(soundfile.info(str(path)).frames / codec.hop_length)
            tokens["n"] = frames * codec.n_q_used
        return str(path), tokens["n"]
