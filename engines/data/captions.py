"""Natural-language descriptions of segments, built from their analysis: the text side of the GPT's training.

    describe(facts, rng)   one caption: a template, synonyms, and a shuffled, partial set of the facts
    facts_from_row(row)    SegmentFacts from a cache row (analysis stored at prepare time)
    prompt_for(mode, ...)  the plain prompt the studio fills in and `evaluate` asks with

What a caption can say (thresholds in percentile units of the corpus, as the analyzer's axes are):

    mode                 "RED", also with its character words ("a fiery, driving RED passage")
    axes                 above 0.7 / below 0.3: energetic / calm, bright / dark, tense / relaxed,
                         intimate / expansive, driving / still (several synonyms each)
    temporal complexity  low / medium / high by the corpus tertiles (TEMPORAL_TERTILES), in words
                         ("high temporal complexity", "rhythmically intricate", "plain rhythm")
    rebracketing         "high" above the corpus's 75th percentile, "none" at 0 (23 % of the corpus)
    key, metre           "in D minor", "in 3/4"
    density, register    notes per bar (sparse / dense), mean pitch (low / middle / high register)

Captions vary on purpose (templates, synonyms, which facts, their order) so that free prompts such as
"Generate a RED segment with high temporal complexity" or "a calm, intimate BLUE phrase" land near
something the model has read. Everything is seeded by the caller's numpy Generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.music.analyzer import AXES, MODES
from engines.music.features import PITCH_NAMES

# Corpus tertiles of temporal complexity and the 75th percentile of rebracketing (measured on the
# prepared corpus; `python -m engines stats` prints the distributions).
TEMPORAL_TERTILES = (0.43, 0.54)
REBRACKETING_HIGH = 0.63   # analyzer version 4 (graded rebracketing); 0.82 under version 3
AXIS_HIGH, AXIS_LOW = 0.7, 0.3

MODE_CHARACTER = {
    "BLACK": ("grave", "dark", "heavy"), "RED": ("fiery", "driving", "dramatic"),
    "ORANGE": ("warm", "dancing", "exuberant"), "YELLOW": ("bright", "cheerful", "plain"),
    "GREEN": ("pastoral", "calm", "flowing"), "BLUE": ("melancholy", "lyrical", "soft"),
    "INDIGO": ("introspective", "wandering", "mysterious"), "VIOLET": ("shimmering", "chromatic", "strange"),
}
# axis -> (words when high, words when low)
AXIS_WORDS = {
    "energy": (("energetic", "lively", "vigorous", "loud"), ("calm", "gentle", "quiet", "subdued")),
    "valence": (("bright", "happy", "joyful", "sunny"), ("dark", "sombre", "sad", "gloomy")),
    "tension": (("tense", "restless", "dissonant", "uneasy"), ("relaxed", "serene", "consonant", "peaceful")),
    "intimacy": (("intimate", "tender", "delicate", "close"), ("expansive", "grand", "full", "broad")),
    "motion": (("driving", "busy", "running", "agile"), ("still", "static", "slow", "steady")),
}
NOUNS = ("segment", "phrase", "passage", "excerpt", "melody", "fragment", "theme", "idea", "piece")
COMPLEXITY_WORDS = {
    "low": ("low temporal complexity", "simple rhythms", "a plain rhythm", "little rhythmic variety"),
    "medium": ("medium temporal complexity", "moderate rhythmic variety", "some rhythmic variety"),
    "high": ("high temporal complexity", "intricate rhythms", "complex rhythms", "busy rhythmic detail"),
}
REBRACKETING_WORDS = {
    "high": ("high rebracketing", "strong syncopation", "ties across the bar", "metric displacement"),
    "none": ("no rebracketing", "square phrasing", "everything on the beat", "no syncopation"),
}
DENSITY_WORDS = {"sparse": ("a sparse texture", "few notes"), "dense": ("a dense texture", "many notes")}
REGISTER_WORDS = {"low": ("low register", "deep register"), "middle": ("middle register",),
                  "high": ("high register", "upper register")}
TEMPLATES = (
    "{adj} {MODE} {noun}{with}",
    "generate a {adj} {MODE} {noun}{with}",
    "a {MODE} {noun}{with}, {adj}",
    "{MODE} {noun}: {adj}{with}",
    "write a {adj} {noun} in the {MODE} mode{with}",
    "{adj} {noun}{with}",
    "a {noun}{with}",
    "compose a {adj} {MODE} {noun}{with}",
)


@dataclass
class SegmentFacts:
    """What a caption may say of one segment."""
    mode: str
    axes: dict                 # AXES -> percentile in [0, 1] (valence as 0..1)
    temporal_complexity: float
    rebracketing: float
    key: str                   # "D minor"
    metre: str                 # "3/4"
    notes_per_bar: float
    register: float            # mean MIDI pitch, weighted by duration


def facts_from_row(row, feature_names: tuple) -> SegmentFacts:
    """A cache segment row (engines/data/cache.SEGMENT_DTYPE) -> SegmentFacts."""
    axes = {a: float(v) for a, v in zip(AXES, row["axes"])}
    axes["valence"] = (axes["valence"] + 1) / 2
    features = dict(zip(feature_names, row["features"].tolist()))
    key = int(row["key"])
    return SegmentFacts(mode=MODES[int(row["mode"])], axes=axes,
                        temporal_complexity=float(row["temporal_complexity"]),
                        rebracketing=float(row["rebracketing"]),
                        key=f"{PITCH_NAMES[key % 12]} {'minor' if key >= 12 else 'major'}",
                        metre=f"{int(row['ts_num'])}/{int(row['ts_den'])}",
                        notes_per_bar=int(row["note_count"]) / max(int(row["num_bars"]), 1),
                        register=float(features["register"]))


# Attribute phrases (issue 19): "energy 7 valence 2 complexity 4", each value in unit scale as a digit 0..9,
# appended to a caption after " ; ". A GPT trained with them (model.autoregressive.attribute_captions) reads
# the studio's sliders this way; one trained before them has no such words and is not given them.
ATTRIBUTE_WORDS = {"energy": "energy", "valence": "valence", "tension": "tension", "intimacy": "intimacy",
                   "motion": "motion", "rebracketing": "rebracketing", "temporal_complexity": "complexity"}


def attribute_phrase(values: dict) -> str:
    """{attribute: value in unit scale} -> "energy 7 valence 2" (in ATTRIBUTE_WORDS order; 10 levels)."""
    return " ".join(f"{word} {min(9, max(0, int(round(float(values[name]) * 9))))}"
                    for name, word in ATTRIBUTE_WORDS.items() if values.get(name) is not None)


def fact_values(facts: SegmentFacts) -> dict:
    """A segment's attributes in unit scale (its facts' axes are already unit scale)."""
    return {**facts.axes, "rebracketing": facts.rebracketing, "temporal_complexity": facts.temporal_complexity}


def with_attributes(caption: str, facts: SegmentFacts, rng: np.random.Generator, keep: float = 0.5) -> str:
    """The caption and a random subset of the segment's attributes as a phrase (each kept with probability
    `keep`, at least one), so the model learns any subset."""
    values = fact_values(facts)
    kept = [name for name in ATTRIBUTE_WORDS if rng.random() < keep] or [_pick(rng, list(ATTRIBUTE_WORDS))]
    return f"{caption} ; {attribute_phrase({name: values[name] for name in kept})}"


def complexity_level(value: float) -> str:
    low, high = TEMPORAL_TERTILES
    return "low" if value < low else "high" if value > high else "medium"


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def describe(facts: SegmentFacts, rng: np.random.Generator, mode_probability: float = 0.85) -> str:
    """One caption of `facts`: the mode (with probability `mode_probability`), some adjectives from the mode's
    character and the axes, and a random subset of the other facts in random order."""
    adjectives = []
    for axis in AXES:
        high, low = AXIS_WORDS[axis]
        value = facts.axes[axis]
        if value > AXIS_HIGH and rng.random() < 0.6:
            adjectives.append(_pick(rng, high))
        elif value < AXIS_LOW and rng.random() < 0.6:
            adjectives.append(_pick(rng, low))
    with_mode = rng.random() < mode_probability
    if with_mode and rng.random() < 0.4:
        adjectives.append(_pick(rng, MODE_CHARACTER[facts.mode]))
    rng.shuffle(adjectives)
    adjectives = list(dict.fromkeys(adjectives))[:3]
    details = []
    if rng.random() < 0.6:
        details.append(_pick(rng, COMPLEXITY_WORDS[complexity_level(facts.temporal_complexity)]))
    if facts.rebracketing >= REBRACKETING_HIGH and rng.random() < 0.6:
        details.append(_pick(rng, REBRACKETING_WORDS["high"]))
    elif facts.rebracketing == 0 and rng.random() < 0.25:
        details.append(_pick(rng, REBRACKETING_WORDS["none"]))
    if rng.random() < 0.35:
        details.append(f"in {facts.key}")
    if rng.random() < 0.35:
        details.append(f"in {facts.metre}")
    if rng.random() < 0.25:
        density = "sparse" if facts.notes_per_bar < 4 else "dense" if facts.notes_per_bar > 10 else None
        if density:
            details.append(_pick(rng, DENSITY_WORDS[density]))
    if rng.random() < 0.25:
        register = "low" if facts.register < 55 else "high" if facts.register > 72 else "middle"
        details.append(_pick(rng, REGISTER_WORDS[register]))
    rng.shuffle(details)
    templates = TEMPLATES if with_mode else tuple(t for t in TEMPLATES if "{MODE}" not in t)
    return _fill(_pick(rng, templates), facts.mode if with_mode else "", adjectives, details, _pick(rng, NOUNS))


def _fill(template: str, mode: str, adjectives: list[str], details: list[str], noun: str) -> str:
    adj = ", ".join(adjectives)
    with_part = ""
    if details:
        in_parts = [d for d in details if d.startswith("in ")]
        other = [d for d in details if not d.startswith("in ")]
        with_part = (" with " + " and ".join(other) if other else "") + "".join(" " + d for d in in_parts)
    text = template.format(adj=adj, MODE=mode, noun=noun, **{"with": with_part})
    words = text.replace(" ,", ",").replace(": ,", ":").split()
    # "a" before a vowel sound reads "an" ("an energetic", "an excerpt", "an INDIGO")
    words = [("an" if w == "a" and i + 1 < len(words) and words[i + 1][0].lower() in "aeiou" else w)
             for i, w in enumerate(words)]
    return " ".join(words).strip(" ,:")


def prompt_for(mode: str | None = None, complexity: str | None = None) -> str:
    """The plain prompt for a mode (None or WHITE: no mode) and optionally a temporal complexity level
    (low / medium / high): what the studio's mode picker fills in ("generate an ORANGE segment")."""
    named = mode.upper() if mode and mode.upper() in MODES else ""
    return _fill("generate a {MODE} {noun}{with}", named, [], [f"{complexity} temporal complexity"] if complexity else [],
                 "segment")


def mode_named(text: str | None) -> str | None:
    """The first chromatic mode a prompt names ("a calm BLUE phrase" -> "BLUE"), or None."""
    for word in (text or "").replace(",", " ").split():
        if word.strip(".:;!?").upper() in MODES:
            return word.strip(".:;!?").upper()
    return None
