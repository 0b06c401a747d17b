"""Verified generation, written once for every engine: draw K candidates per result in one batch, score them
with the learned chromatic judge, reject copies of training segments, hand back the best n.

    verifier = Verifier.for_config(cfg)                       # the shipped judge and the corpus' train split
    result = draw(generator, Request("vae", mode="RED", n=1), settings, verifier)
    result.segments, result.verifications[0].to_dict(), result.summary()

Scoring: a candidate's score is the judge's log-probability of the asked mode (0 for WHITE, which asks for
none) minus `attribute_weight` times the mean absolute distance between the judge's reading of the asked
attributes (rebracketing, temporal complexity) and their targets. When a scale is asked, a candidate heard in
the other one (engines/music/performance.heard_key) ranks after every candidate heard in it. The judge selects;
the analyzer stays the independent measure, so every result also carries the mode the analyzer hears.

Candidates are drawn already performed (engines/generation/musical.py: tempo, scale, dynamics, instrument), so
the judge and the copy check hear what the musician will.

Copies: walking down the ranking, a candidate whose nearest training segment is at least `copy_threshold`
similar (engines/generation/copies.py) is rejected, so a verified result is never a corpus tune. A candidate
with no notes comes after every other. With one candidate (K = 1) nothing is selected or rejected: that is the
raw model, reported with its judge score.

Rounds: while fewer than n of the non-copies chosen are heard as asked by the judge, another round of K per
result is drawn from further seeds (at most MAX_ROUNDS), with the engine's `diversify`d settings (the GPT samples
hotter and leans less on its prompt: where it memorised a mode's tunes, its usual settings write them again).

What it costs is K times a plain draw, more where rounds are needed: 32 VAE candidates take about as long as
one diffusion step; 8 diffusion or GPT candidates decode as one batch.
"""
from __future__ import annotations

import functools

import math
import threading
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from engines.errors import StudioError
from engines.generation.base import Request
from engines.generation.musical import check_metre_kept, check_musical, perform
from engines.music.analyzer import ANALYZER_ATTRIBUTES, MODES, WHITE
from engines.music.notes import Segment, first_bars
from engines.music.performance import heard_key

MAX_ROUNDS = 4        # rounds of K candidates at most, while too few are heard as asked and are not copies
MAX_RESULTS = 256     # results one request may ask for
OUT_OF_SCALE = 1e3    # score taken from a candidate heard in the other scale than the one asked
RAW = "one candidate per result: the raw model"   # why an unchecked draw was neither ranked nor checked


@dataclass
class Verification:
    """How one result was chosen (plain data: it travels to the studio and into JSON)."""

    candidates: int                  # candidates drawn for each result (1: unchecked)
    judge_score: float | None        # the judge's probability of the asked mode (None: WHITE, or no judge)
    judge_mode: str | None           # the mode the judge hears (None without a judge)
    analyzer_mode: str | None        # the mode the analyzer hears (None: no notes)
    rank: int                        # its place in the judge's ranking of all candidates drawn (1 = best)
    rejected_copies: int             # candidates of this request rejected as copies of training segments
    copy_similarity: float | None    # similarity to its nearest training segment (None: not checked)
    attribute_distance: float | None = None  # judge's mean distance to the asked attributes (None: none asked)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Draw:
    """The results of one request and how they were chosen."""

    segments: list[Segment]
    verifications: list[Verification]
    asked_mode: str
    candidates: int                  # per result
    drawn: int                       # candidates drawn in all
    heard: int | None                # candidates the judge hears in the asked mode (None: WHITE, or no judge)
    rejected_copies: int
    asked: int                       # results asked for (fewer come back when too many candidates were copies)
    unranked_because: str            # why the judge did not rank the candidates ("" when it did)
    copies_unchecked_because: str    # why they were not checked for copies ("" when they were)
    raw: list[Segment] = field(default_factory=list)  # every candidate, in the order drawn

    @property
    def judged(self) -> bool:
        return not self.unranked_because

    def summary(self) -> str:
        """One line for the studio, e.g. "5 of 8 candidates heard as RED by the judge; showing the best 1"."""
        if self.unranked_because == RAW and self.copies_unchecked_because == RAW:
            return "Unchecked: one candidate per result (the raw model)."
        parts = []
        if self.heard is not None:
            parts.append(f"{self.heard} of {self.drawn} candidates heard as {self.asked_mode} by the judge")
        elif self.judged:
            parts.append(f"{self.drawn} candidates ranked by the judge toward what was asked")
        else:
            checked = "" if self.copies_unchecked_because else "checked for copies, "
            parts.append(f"{self.drawn} candidates {checked}not ranked ({self.unranked_because})")
        if self.copies_unchecked_because:
            parts.append(f"not checked for copies ({self.copies_unchecked_because})")
        if self.rejected_copies:
            parts.append(f"{self.rejected_copies} rejected as copies of training segments")
        shown = len(self.segments)
        parts.append(f"showing the best {shown}" if self.judged else f"showing {shown}")
        if shown < self.asked:
            parts.append(f"only {shown} of the {self.asked} asked for: every other candidate was a copy")
        return "; ".join(parts) + "."


class Verifier:
    """The judge and the copy index verified generation uses; either may be missing (then it is skipped)."""

    def __init__(self, judge=None, copies=None, analyzer=None, copy_threshold: float = 0.8,
                 attribute_weight: float = 5.0, candidates: int | None = None):
        self.judge = judge               # engines.models.chromatic_judge.TrainedJudge, or None
        self._copies = copies            # CopyIndex, a callable that builds one, or None
        self.analyzer = analyzer
        self.copy_threshold = copy_threshold
        self.attribute_weight = attribute_weight
        self.candidates = candidates     # generation.verify.candidates: overrides every engine's default
        self._lock = threading.Lock()    # one copy index, however many users ask for it first

    @classmethod
    def for_config(cls, cfg, cache=None, judge="auto") -> "Verifier":
        """The shipped judge (checkpoints_dir/judge.pt, when there is one) and a copy index of the train split
        of `cache` (the config's corpus by default), built when first needed."""
        from engines.music.analyzer import ChromaticAnalyzer

        if judge == "auto":
            from engines.models.chromatic_judge import shipped_judge

            judge = shipped_judge(cfg.model.checkpoints_dir)
        v = cfg.generation.verify

        def copies():
            from engines.data.prepare import ensure_corpus_cache
            from engines.generation.copies import CopyIndex

            return CopyIndex.build(cache if cache is not None else ensure_corpus_cache(cfg),
                                   threshold=v.copy_threshold)

        return cls(judge, copies, ChromaticAnalyzer(cfg.analyzer), v.copy_threshold, v.attribute_weight,
                   v.candidates)

    @property
    def copies(self):
        """The CopyIndex (built on first use), or None."""
        with self._lock:
            if callable(self._copies):
                self._copies = self._copies()
            return self._copies

    def can_rank(self, mode: str, attributes: dict | None, scale: str | None = None) -> bool:
        """Whether there is anything to rank candidates by: a judge, and a mode, attributes or a scale asked for."""
        return self.judge is not None and (mode != WHITE or bool(attributes) or bool(scale))

    def judge_readings(self, segments: list[Segment]) -> tuple[np.ndarray, np.ndarray] | None:
        """(probabilities (N, 8), attributes (N, 7)) of segments with notes, or None without a judge. Segments
        longer than the judge reads are judged on their first bars."""
        if self.judge is None or not segments:
            return None
        bars = self.judge.data.get("segment_bars", 4)
        readable = [first_bars(s, bars) for s in segments]
        probabilities, attributes, _ = self.judge.run(readable)
        return probabilities, attributes

    def scores(self, segments: list[Segment], mode: str, attributes: dict | None, scale: str | None = None) -> dict:
        """Per candidate: "score" (higher is better; -inf without notes), "p" (the asked mode's probability),
        "heard" (the judge's mode), "distance" (to the asked attributes). With a `scale` ("major", "minor"),
        candidates heard in the other one rank after every one heard in it."""
        from engines.models.chromatic_judge import JUDGE_ATTRIBUTES

        n = len(segments)
        out = {"score": np.zeros(n), "p": [None] * n, "heard": [None] * n, "distance": [None] * n}
        has_notes = np.array([len(s.notes) > 0 for s in segments], bool)
        out["score"][~has_notes] = -math.inf
        kept = [s for s, keep in zip(segments, has_notes) if keep]
        readings = self.judge_readings(kept)
        if readings is None:
            return out
        probabilities, judged = readings
        positions = np.nonzero(has_notes)[0]
        targets = {k: float(v) for k, v in (attributes or {}).items() if k in ANALYZER_ATTRIBUTES and v is not None}
        for row, i in enumerate(positions):
            score = 0.0
            if mode != WHITE:
                p = float(probabilities[row, MODES.index(mode)])
                out["p"][i] = round(p, 4)
                score += math.log(max(p, 1e-12))
            if targets:
                distance = float(np.mean([abs(judged[row, JUDGE_ATTRIBUTES.index(k)] - t) for k, t in targets.items()]))
                out["distance"][i] = round(distance, 4)
                score -= self.attribute_weight * distance
            out["heard"][i] = MODES[int(probabilities[row].argmax())]
            if scale and heard_key(segments[i])[1] != (scale == "major"):
                score -= OUT_OF_SCALE
            out["score"][i] = score
        return out


def asked_mode(generator, request: Request, settings) -> str:
    """The mode a request asks for; StudioError for an unknown one or a bad tempo, metre, scale, instrument or
    dynamics (engines/generation/musical.py)."""
    check_musical(request)
    mode = generator.asked_mode(request, settings)
    if mode != WHITE and mode not in MODES:
        raise StudioError(f"unknown mode '{request.mode}'; choose one of {', '.join(MODES + (WHITE,))}")
    return mode


def candidates_per_result(generator, request: Request, settings, verifier: Verifier | None) -> int:
    if request.candidates is None and verifier is not None and verifier.candidates is not None:
        request = replace(request, candidates=verifier.candidates)
    return generator.candidates(request, settings)


def draw(generator, request: Request, settings, verifier: Verifier | None = None, on_step=None,
         cfg=None, run=None, cost=None) -> Draw:
    """n results of `request` from `generator`, each the best of K candidates when `verifier` is given and K > 1
    (module docstring). `on_step(step, total, preview)` gets, at every step, `preview()`: the live view of the
    first n rows (engines that have one), built when called; returning True stops sampling, and the
    candidates are taken from where it stopped. `run(request, on_step)` samples (default generator.run; the
    studio passes its engine's Batcher.run, so requests of many users share batches). `cost(candidates)`, when
    given, is one number per candidate taken from its score: what else the caller ranks by (the arranger: how
    far a section's opening moves from the bars before it)."""
    run = run or generator.run
    if verifier is not None and getattr(generator, "training_copies", False) is None:
        # the corpus the results are checked against is also the one sampling steers away from copying (a
        # Generator without GeneratorBase's attribute samples as it does)
        generator.training_copies = lambda: verifier.copies
    mode = asked_mode(generator, request, settings)
    settings = generator.for_mode(settings, mode)   # e.g. the GPT's calibrated sampling for the mode
    n = int(request.n)
    if not 1 <= n <= MAX_RESULTS:
        raise StudioError(f"the number of results must lie in 1..{MAX_RESULTS}, got {n}")
    k = candidates_per_result(generator, request, settings, verifier) if verifier is not None else 1
    if request.init_midi is not None and not isinstance(request.init_midi, Segment):
        request = replace(request, init_midi=request.init_segment(cfg))  # the file is read once
    if request.init_midi is not None:
        check_metre_kept(request, request.init_midi)
    if verifier is None or k == 1:
        raw, _ = _draw_all(generator, run, request, settings, n, mode, on_step)
        readings = verifier.scores(raw, mode, request.attributes, request.scale) if verifier else None
        return _unchecked(raw, readings, verifier, mode)
    ranked = verifier.can_rank(mode, request.attributes, request.scale)
    per_result = k if ranked else 1   # nothing to rank them by: one per result, and copies replaced
    if verifier.copies is None:
        copies_because = "no corpus to check against"
    elif _starts_from_training(request, verifier):
        copies_because = "the segment it starts from is itself a training segment"
    else:
        copies_because = ""
    raw, stopped = _draw_all(generator, run, request, settings, n * per_result, mode, on_step)
    readings = _costed(verifier.scores(raw, mode, request.attributes, request.scale), raw, cost)
    similarity: dict[int, float] = {}
    for extra in range(MAX_ROUNDS):
        order = np.argsort(-readings["score"], kind="stable")     # best first; ties keep the order drawn
        chosen, rejected = _select(raw, order, n, None if copies_because else verifier, similarity)
        heard_as_asked = sum(readings["heard"][i] == mode for i in chosen) if ranked and mode != WHITE \
            else len(chosen)
        if heard_as_asked == n or extra == MAX_ROUNDS - 1 or stopped:
            break
        # too few of the chosen are heard as asked (or not copies): another round from other seeds, sampled
        # more freely (a model that memorised a mode's few training tunes writes them again at its usual
        # settings); the studio's line says how many were drawn and rejected
        more, stopped = _draw_all(generator, run, request, generator.diversify(settings, extra + 1),
                                  n * per_result, mode, on_step, round_=extra + 1)
        more_readings = _costed(verifier.scores(more, mode, request.attributes, request.scale), more, cost)
        raw += more
        readings = {key: (np.concatenate([readings[key], more_readings[key]]) if key == "score"
                          else readings[key] + more_readings[key]) for key in readings}
    rank = {int(i): r + 1 for r, i in enumerate(order)}
    heard = sum(h == mode for h in readings["heard"]) if verifier.judge is not None and mode != WHITE else None
    verifications = [Verification(candidates=per_result, judge_score=readings["p"][i],
                                  judge_mode=readings["heard"][i], analyzer_mode=_analyzer_mode(verifier, raw[i]),
                                  rank=rank[i], rejected_copies=rejected,
                                  copy_similarity=round(similarity[i], 4) if i in similarity else None,
                                  attribute_distance=readings["distance"][i]) for i in chosen]
    because = "" if ranked else ("no judge installed" if verifier.judge is None else "no mode or attributes asked")
    return Draw(segments=[raw[i] for i in chosen], verifications=verifications, asked_mode=mode,
                candidates=per_result, drawn=len(raw), heard=heard, rejected_copies=rejected, asked=n,
                unranked_because=because, copies_unchecked_because=copies_because, raw=raw)


def _costed(readings: dict, raw: list[Segment], cost) -> dict:
    """`readings` with `cost(raw)` taken from each candidate's score (none without a cost)."""
    if cost is not None and len(raw):
        readings["score"] = readings["score"] - np.asarray(cost(raw), dtype=float)
    return readings


def _starts_from_training(request: Request, verifier: Verifier) -> bool:
    """Whether the segment a request keeps bars of is itself (nearly) a training segment: then every result
    keeps training notes, and the copy check would reject them all for what the user brought."""
    init = request.init_midi
    return isinstance(init, Segment) and len(init.notes) > 0 and \
        verifier.copies.nearest(init)[0] >= verifier.copy_threshold


def _select(raw: list[Segment], order: np.ndarray, n: int, verifier: Verifier | None,
            similarity: dict[int, float]) -> tuple[list[int], int]:
    """Walk down the ranking: the first n candidates that are not copies (no check without a verifier), and how
    many copies were passed over. `similarity` caches each candidate's nearest-training-segment similarity."""
    chosen, rejected = [], 0
    for i in order:
        if len(chosen) == n:
            break
        if verifier is not None and len(raw[i].notes) and verifier.copies is not None:
            if i not in similarity:
                similarity[int(i)], _ = verifier.copies.nearest(raw[i])
            if similarity[int(i)] >= verifier.copy_threshold:
                rejected += 1
                continue
        chosen.append(int(i))
    return chosen, rejected


def _draw_all(generator, run, request: Request, settings, total: int, mode: str, on_step,
              round_: int = 0) -> tuple[list[Segment], bool]:
    """`total` segments in batches of at most the engine's max_batch, and whether on_step asked to stop (then
    the batch that was running ends early and no further batch starts). The first batch of the first round
    uses the request's seed (so one candidate per result is the raw model at that seed); every other batch
    a seed derived from (seed, round, batch), so neighbouring seeds share no candidates."""
    out: list[Segment] = []
    shown = int(request.n)
    stopped = {"now": False}

    def watch(step, steps, state):
        # the view is built only when the caller shows it: at every token it cost the GPT 4x its time
        stop = bool(on_step(step, steps, functools.partial(generator.preview, state, shown)))
        stopped["now"] = stopped["now"] or stop
        return stop

    batch = 0
    while len(out) < total and not stopped["now"]:
        size = min(generator.max_batch, total - len(out))
        part = replace(request, mode=mode, n=size, seed=batch_seed(int(request.seed), round_, batch),
                       settings=settings)
        drawn = run(part, watch if (on_step is not None and generator.live) else None)
        out += [perform(segment, request) for segment in drawn]   # tempo, scale, dynamics, instrument
        batch += 1
    return out, stopped["now"]


def batch_seed(seed: int, round_: int, batch: int) -> int:
    if round_ == 0 and batch == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, round_, batch]).generate_state(1)[0] % 2**31)


def _unchecked(raw: list[Segment], readings: dict | None, verifier, mode: str) -> Draw:
    results = raw
    verifications = [Verification(candidates=1, judge_score=readings["p"][i] if readings else None,
                                  judge_mode=readings["heard"][i] if readings else None,
                                  analyzer_mode=_analyzer_mode(verifier, s), rank=1, rejected_copies=0,
                                  copy_similarity=None,
                                  attribute_distance=readings["distance"][i] if readings else None)
                     for i, s in enumerate(results)]
    return Draw(segments=results, verifications=verifications, asked_mode=mode, candidates=1, drawn=len(raw),
                heard=None, rejected_copies=0, asked=len(raw), unranked_because=RAW, copies_unchecked_because=RAW,
                raw=raw)


def _analyzer_mode(verifier, segment: Segment) -> str | None:
    if verifier is None or verifier.analyzer is None or not len(segment.notes):
        return None
    return verifier.analyzer.analyze(segment).mode

