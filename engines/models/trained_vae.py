"""A trained VAE as users meet it: sample, encode, decode to Segments, interpolate, shift along attributes.

    vae = TrainedVAE.load("assets/checkpoints/vae.pt")
    segments, z = vae.sample("RED", n=4, temperature=1.0, seed=1)
    path = vae.decode(vae.interpolate(z[0], z[1], steps=8), mode="RED")

Keys: a checkpoint trained with `key_to_c` (the default) writes in C major or C minor; `encode` moves a
segment to the tonic C first (by the key the analyzer estimates) and `decode(..., tonic="G")` moves the
result to another tonic, the nearer way (-6..5 semitones).

Priors: a request for a mode draws z from the Gaussian finalize fitted to that mode's clearest training latents
(or the network's own prior). A request that asks attributes (the axis sliders) and no mode draws from the
attribute prior instead (neighbourhood_latents): the mean of a few of the training latents whose measured
attributes lie nearest the asked ones.

Steering: with a critic attached (the judge beside the checkpoint), each drawn latent takes one signed step
toward what its decoded roll should measure: the asked mode, the asked attributes
(engines/sampling/critic_steering.py; `sample(..., steer=0)` draws as the prior alone does).

Decoding: a step starts a note where the onset probability reaches the checkpoint's calibrated threshold
(0.5 if it has none) and the note lasts while the sustain probability >= 0.5; with the config's
`pitch_window` only the peak of onsets that close in pitch sounds, and a held note ends where such a
neighbour starts (logits_to_segments). The metre is the metre head's argmax and the tempo its prediction.
The corpus carries no dynamics, so every note gets DEFAULT_VELOCITY.
"""
from __future__ import annotations

from pathlib import Path

import torch

from engines.data.torch_dataset import METRES, WHITE_INDEX, metre_index
from engines.errors import StudioError
from engines.music.analyzer import MODES, WHITE
from engines.music.notes import Segment, notes_to_roll, shift_to_c, transpose_notes
from engines.models.conditioning import asked_in_pool, attribute_tensors, nearest_rows, request_attributes
from engines.models.latent_map import LatentMap
from engines.models.roll_decoding import (DEFAULT_VELOCITY, TONICS, neighbour_onsets, pitch_peaks,  # noqa: F401
                                         probabilities_to_segments, segment_tonic, tonic_shift)
from engines.models.vae import ChromaticVAE, model_from_checkpoint
from engines.models.chromatic_judge import JUDGE_ATTRIBUTES
from engines.sampling import latent as latent_ops
from engines.sampling.critic_steering import STEP_SIZE, judge_reader, steered
from engines.training.common import load_checkpoint

ONSET_THRESHOLD = 0.5
SUSTAIN_THRESHOLD = 0.5


METRE_POOL = 8   # latents drawn per result when a metre is asked (latents_in_metre)
PRIORS = ("fitted", "network")   # what sample_latents draws from


def mode_index(mode: str) -> int:
    mode = (mode or WHITE).upper()
    if mode == WHITE:
        return WHITE_INDEX
    if mode not in MODES:
        raise StudioError(f"unknown mode '{mode}'; choose one of {', '.join(MODES + (WHITE,))}")
    return MODES.index(mode)


def mode_name(mode: str) -> str:
    """A mode as the user may write it ("red", "", "WHITE") -> its canonical name (RED, WHITE)."""
    index = mode_index(mode)
    return MODES[index] if index < len(MODES) else WHITE


def logits_to_segments(out: dict, steps_per_beat: int = 4, pitch_low: int = 21, segment_bars: int = 4,
                       onset_threshold: float = ONSET_THRESHOLD, pitch_window: int = 0) -> list[Segment]:
    """Decoder output (onset/sustain (B, T, P) logits, metre logits, log_tempo) -> Segments (roll_decoding)."""
    return probabilities_to_segments(torch.sigmoid(out["onset"]), torch.sigmoid(out["sustain"]),
                                     out["metre"].argmax(dim=1).tolist(),
                                     torch.exp(out["log_tempo"]).clamp(30, 300).tolist(), steps_per_beat,
                                     pitch_low, segment_bars, onset_threshold, SUSTAIN_THRESHOLD, pitch_window)


class TrainedVAE:
    def __init__(self, model: ChromaticVAE, payload: dict, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.payload = payload
        self.data = payload.get("data", {"segment_bars": 4, "steps_per_beat": 4, "pitch_low": 21, "pitch_high": 108})
        self.vectors: dict[str, torch.Tensor] = {k: torch.as_tensor(v) for k, v in payload.get("vectors", {}).items()}
        # Chosen on the validation split by finalize (engines/training/vae_finalize.py).
        self.onset_threshold = float(payload.get("onset_threshold", ONSET_THRESHOLD))
        self.pitch_window = int(model.config.pitch_window)
        self.latent_map: LatentMap | None = LatentMap(payload["latent_map"]) if "latent_map" in payload else None
        # per mode, the attributes deep inside its region (none in checkpoints from before them)
        self.mode_targets: dict = payload.get("mode_targets", {})
        # p(z | mode) fitted by finalize to the latents of each mode's clearest training segments, and the
        # onset threshold at which its samples hold as many notes as real segments (absent in older runs)
        self.fitted_prior = {k: torch.as_tensor(v) for k, v in payload.get("fitted_prior", {}).items()}
        self.sample_onset_threshold = float(payload.get("sample_onset_threshold", self.onset_threshold))
        # per mode, the fitted prior's temperature finalize measured it is most often heard as asked at
        # (vae_finalize.calibrate_temperatures; absent in older runs: 1)
        self.temperature_calibration: dict = payload.get("temperature_calibration", {})
        # p(z | attributes), fitted by finalize (vae_finalize.attribute_prior): training latents encoded with no
        # mode, their attributes in unit scale, and how many neighbours a draw mixes (absent in older runs)
        self.attribute_prior: dict = payload.get("attribute_prior", {})
        # the judge whose reading of a decoded roll steers drawn latents (attach_critic; None: none), and its
        # reader over this VAE's attributes (critic_steering.judge_reader)
        self.critic = None
        self._read = None

    def attach_critic(self, judge) -> None:
        """Steer drawn latents by `judge` (a TrainedJudge): it must read rolls of this VAE's shape and pitch range
        and every attribute the VAE is conditioned on (StudioError otherwise)."""
        names = self.model.config.attributes
        shape = (self.model.steps, self.model.pitches, self.data.get("pitch_low", 21))
        read_shape = (judge.model.steps, judge.model.pitches, judge.model.pitch_low)
        if read_shape != shape:
            raise StudioError(f"the VAE's critic reads {read_shape[0]}x{read_shape[1]} rolls from pitch "
                              f"{read_shape[2]}; this VAE writes {shape[0]}x{shape[1]} from pitch {shape[2]}")
        missing = [name for name in names if name not in JUDGE_ATTRIBUTES]
        if missing:
            raise StudioError(f"the VAE's critic reads no {missing[0]} (it reads: {', '.join(JUDGE_ATTRIBUTES)})")
        judge.model.to(self.device)
        self.critic, self._read = judge, judge_reader(judge.model, names)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TrainedVAE":
        payload = load_checkpoint(path, map_location=device, engine="vae")
        return cls(model_from_checkpoint(payload), payload, device)

    def onset_probabilities(self, onset_logits: torch.Tensor) -> torch.Tensor:
        """(B, T, P) onset logits -> the probabilities decoding thresholds (peaks within pitch_window only)."""
        return pitch_peaks(torch.sigmoid(onset_logits), self.pitch_window)

    @property
    def latent_dim(self) -> int:
        return self.model.config.latent_dim

    @torch.no_grad()
    def decode(self, z: torch.Tensor, mode: str = WHITE, attributes: dict | None = None,
               tonic: str | None = None, onset_threshold: float | None = None,
               metre: tuple[int, int] | None = None) -> list[Segment]:
        """Latents (B, D) -> Segments. `attributes`: any of the model's attributes in the analyzer's scale
        ({"rebracketing": x, "energy": y, ...}) or None; a mode fills the axes not given with its interior
        target (engines/models/conditioning.py). `tonic` moves a key_to_c model's output from C to that tonic.
        `onset_threshold`: None = the one chosen on reconstructions (encoded segments). `metre`: the bars are
        read in it (e.g. (3, 4)) instead of the metre head's choice."""
        [out] = self.decoder_outputs([(z, mode, attributes)])
        return self.outputs_to_segments(out, tonic, onset_threshold, metre)

    @torch.no_grad()
    def decoder_outputs(self, parts: list[tuple[torch.Tensor, str, dict | None]]) -> list[dict]:
        """Several requests' latents decoded in one batch: per (z (B, D), mode, attributes), the decoder's
        outputs for its rows (onset and sustain logits (B, T, P), metre logits, log tempo)."""
        z, modes, values, given, sizes = self._conditioned(parts)
        out = self.model.decode(z, modes, values, given)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [{key: value[a:a + size] for key, value in out.items()} for a, size in zip(starts, sizes)]

    def _conditioned(self, parts: list[tuple[torch.Tensor, str, dict | None]]) -> tuple:
        """Several requests' rows as one batch: latents (B, D), modes (B,), the decoder's attribute values and
        given flags (B, k) (the asked attributes, and a mode's interior on the axes not asked), rows per part."""
        names = self.model.config.attributes
        latents, modes, values, given, sizes = [], [], [], [], []
        for z, mode, attributes in parts:
            z = z.reshape(-1, self.latent_dim).to(self.device)
            asked = request_attributes(mode_name(mode), attributes, self.mode_targets, names)
            part_values, part_given = attribute_tensors(asked, names, z.shape[0], self.device)
            latents.append(z), values.append(part_values), given.append(part_given), sizes.append(z.shape[0])
            modes.append(torch.full((z.shape[0],), mode_index(mode), dtype=torch.long, device=self.device))
        return torch.cat(latents), torch.cat(modes), torch.cat(values), torch.cat(given), sizes

    def steer(self, parts: list[tuple[torch.Tensor, str, dict | None]], step_size: float = STEP_SIZE,
              prior: str = "fitted") -> list[torch.Tensor]:
        """Each part's latents (z (n, D), mode, attributes) after one critic step toward the mode and the
        attributes it asks (critic_steering.steered), all parts in one batch; as they were without a critic
        or at step 0. Read at the onset threshold `prior`'s samples are decoded with."""
        if self.critic is None or step_size <= 0 or not parts:
            return [z for z, _, _ in parts]
        z, modes, values, given, sizes = self._conditioned(parts)
        names = self.model.config.attributes
        asked = [attribute_tensors({k: v for k, v in (attributes or {}).items() if k in names}, names, n,
                                   self.device) for n, (_, _, attributes) in zip(sizes, parts)]
        targets, flags = torch.cat([a[0] for a in asked]), torch.cat([a[1] for a in asked])
        threshold = self.sampling_threshold(prior)
        moved = steered(lambda latents: self.model.decode(latents, modes, values, given), self._read, z, modes,
                        targets, flags, self.onset_threshold if threshold is None else threshold, step_size).cpu()
        return list(moved.split(sizes))

    def outputs_to_segments(self, out: dict, tonic: str | None = None, onset_threshold: float | None = None,
                            metre: tuple[int, int] | None = None) -> list[Segment]:
        """One request's decoder outputs -> Segments (decode's arguments)."""
        rows = out["onset"].shape[0]
        if metre is not None:   # one-hot logits: the head's argmax is the metre asked
            out = dict(out, metre=torch.nn.functional.one_hot(torch.full((rows,), metre_index(*metre)),
                                                              len(METRES)).float())
        segments = logits_to_segments(out, self.data["steps_per_beat"], self.data["pitch_low"],
                                      self.data["segment_bars"],
                                      self.onset_threshold if onset_threshold is None else onset_threshold,
                                      self.pitch_window)
        semitones = tonic_shift(tonic)
        for segment in segments:
            segment.notes = transpose_notes(segment.notes, semitones, self.data["pitch_low"], self.data["pitch_high"])
        return segments

    def temperature_for(self, mode: str | None) -> float:
        """The temperature a request for `mode` that sets none is sampled at: the checkpoint's calibration for
        the mode, else 1 (WHITE and uncalibrated checkpoints)."""
        calibrated = self.temperature_calibration.get("modes", {}).get((mode or "").upper(), {})
        return float(calibrated.get("temperature", 1.0))

    def uses_fitted_prior(self, prior: str) -> bool:
        if prior not in PRIORS:
            raise StudioError(f"prior must be one of {', '.join(PRIORS)}, got '{prior}'")
        return prior == "fitted" and bool(self.fitted_prior)

    def follows_attributes(self, mode: str, attributes: dict | None, prior: str = "fitted") -> bool:
        """Whether a request's latents come from the attribute prior: it asks some attribute and no mode, draws
        from the fitted prior, and the checkpoint has an attribute prior. A mode keeps its own prior: mixing
        latents of segments near the asked axes crosses mode borders (docs/vae.md)."""
        return (self.uses_fitted_prior(prior) and mode_name(mode) == WHITE
                and bool(asked_in_pool(self.attribute_prior, attributes)))

    @torch.no_grad()
    def sample_latents(self, mode: str = WHITE, n: int = 1, temperature: float = 1.0, seed: int = 0,
                       prior: str = "fitted", attributes: dict | None = None) -> torch.Tensor:
        """n latents (n, D) from p(z | mode): "fitted", the Gaussian finalize fitted to the mode's clearest
        training latents, N(mean_mode, temperature^2 L L^T) (WHITE: all latents); "network" (and any checkpoint
        without a fitted one), the network's prior N(mu_mode, temperature^2 I) (mu = 0 for a standard prior).
        With attributes asked and no mode, p(z | attributes) (neighbourhood_latents)."""
        if not 0 < temperature <= 5:
            raise StudioError(f"temperature must lie in (0, 5], got {temperature}")
        if not 1 <= n <= 256:
            raise StudioError(f"n must lie in 1..256, got {n}")
        if self.follows_attributes(mode, attributes, prior):
            return self.neighbourhood_latents(attributes, n, temperature, seed)
        index = mode_index(mode)
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(n, self.latent_dim, generator=generator) * temperature
        if self.uses_fitted_prior(prior):
            return self.fitted_prior["mean"][index] + noise @ self.fitted_prior["scale_tril"][index].T
        return self.model.prior_mean(torch.tensor([index], device=self.device)).cpu() + noise

    def attribute_neighbours(self, attributes: dict, generator: torch.Generator) -> torch.Tensor:
        """Rows (k,) of the attribute prior whose attributes lie nearest the asked ones (conditioning.nearest_rows;
        ties broken at random)."""
        return nearest_rows(self.attribute_prior, attributes, generator)

    @torch.no_grad()
    def neighbourhood_latents(self, attributes: dict, n: int, temperature: float, seed: int) -> torch.Tensor:
        """n latents (n, D) for asked attributes: each the mean of `mixed` of the `neighbours` training latents
        nearest the asked attributes (attribute_neighbours), drawn at random, rescaled to their mean norm (a
        plain mean shrinks toward 0, where the decoder writes sparse rolls). One neighbour alone would decode
        to its own segment, a copy; a mix of several lands between them, near the asked attributes. The
        temperature scales each mix's distance from the neighbours' mean (1: as mixed)."""
        generator = torch.Generator().manual_seed(int(seed))
        nearest = self.attribute_neighbours(attributes, generator)
        latents = self.attribute_prior["latents"][nearest].float()   # (k, D)
        centre, mixed = latents.mean(dim=0), min(int(self.attribute_prior["mixed"]), len(latents))
        rows = []
        for _ in range(n):
            picked = latents[torch.randperm(len(latents), generator=generator)[:mixed]]   # (mixed, D)
            mix = picked.mean(dim=0)
            mix = mix * picked.norm(dim=1).mean() / mix.norm().clamp_min(1e-8)
            rows.append(centre + temperature * (mix - centre))
        return torch.stack(rows)

    def sample(self, mode: str = WHITE, n: int = 1, temperature: float = 1.0, seed: int = 0,
               attributes: dict | None = None, tonic: str | None = None,
               prior: str = "fitted", metre: tuple[int, int] | None = None,
               steer: float = STEP_SIZE) -> tuple[list[Segment], torch.Tensor]:
        """n segments sampled under `mode` (WHITE = unconditioned), and their latents (n, D), steered by the
        critic when one is attached (`steer`: the step; 0 = the prior's draw as it is). `metre` (e.g. (3, 4)):
        of METRE_POOL latents per result, the n whose metre head most expects it, written in it."""
        z = self.prior_latents(mode, n, temperature, seed, prior, metre, attributes)
        [z] = self.steer([(z, mode, attributes)], steer, prior)
        return self.decode(z, mode, attributes, tonic, self.sampling_threshold(prior), metre), z

    def prior_latents(self, mode: str, n: int, temperature: float, seed: int, prior: str,
                      metre: tuple[int, int] | None = None, attributes: dict | None = None) -> torch.Tensor:
        """The n latents (n, D) `sample` decodes."""
        if metre is None:
            return self.sample_latents(mode, n, temperature, seed, prior, attributes)
        return self.latents_in_metre(mode, n, temperature, seed, prior, metre_index(*metre), attributes)

    def sampling_threshold(self, prior: str) -> float | None:
        """The onset threshold samples of `prior` are read with (None: the reconstructions' one)."""
        return self.sample_onset_threshold if self.uses_fitted_prior(prior) else None

    @torch.no_grad()
    def latents_in_metre(self, mode: str, n: int, temperature: float, seed: int, prior: str,
                         metre: int, attributes: dict | None = None) -> torch.Tensor:
        """n latents (n, D): of min(256, METRE_POOL * n) drawn, those the metre head gives metre (an index into
        METRES) the highest probability, the likeliest first. The metre lives in z; forcing it on any latent
        would lay a 4/4 roll over 3/4 bars."""
        pool = self.sample_latents(mode, max(n, min(256, METRE_POOL * n)), temperature, seed, prior, attributes)
        modes = torch.full((pool.shape[0],), mode_index(mode), dtype=torch.long, device=self.device)
        likelihood = self.model.metre_logits(pool.to(self.device), modes).log_softmax(dim=1)[:, metre]  # (pool,)
        return pool[likelihood.topk(n).indices.cpu()]

    @torch.no_grad()
    def encode_rolls(self, rolls: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """Posterior means of rolls (B, 2, T, P) under their modes (B,) -> (B, D)."""
        mean, _ = self.model.encode(rolls.to(self.device), modes.to(self.device))
        return mean.cpu()

    def encode(self, segments: list[Segment], mode: str = WHITE) -> torch.Tensor:
        """Posterior means (B, D) of segments (moved to the tonic C first when the model was trained so)."""
        d = self.data
        rolls = []
        for s in segments:
            semitones = shift_to_c(segment_tonic(s)) if self.model.config.key_to_c and len(s.notes) else 0
            notes = transpose_notes(s.notes, semitones, d["pitch_low"], d["pitch_high"])
            rolls.append(torch.from_numpy(notes_to_roll(notes, s.bar_length, s.num_bars, d["steps_per_beat"],
                                                        d["pitch_low"], d["pitch_high"])))
        rolls = torch.stack(rolls)
        modes = torch.full((len(segments),), mode_index(mode), dtype=torch.long)
        return self.encode_rolls(rolls, modes)

    def interpolate(self, z1: torch.Tensor, z2: torch.Tensor, steps: int = 8, method: str = "slerp") -> torch.Tensor:
        return latent_ops.interpolate(z1.reshape(-1), z2.reshape(-1), steps, method)

    def attribute_vector(self, name: str) -> torch.Tensor:
        if name not in self.vectors:
            raise StudioError(f"no attribute vector '{name}'; this checkpoint has: {', '.join(sorted(self.vectors))}")
        return self.vectors[name]

    def shift(self, z: torch.Tensor, name: str, amount: float) -> torch.Tensor:
        return latent_ops.shift(z, self.attribute_vector(name), amount)
