"""What the Evaluate tab shows of one engine's evaluation: the suite's numbers plus what a person needs to
see them: per-mode rows, the requested-vs-heard confusion matrix, real and generated values of each musical
statistic (for histograms), and the best and worst examples by the analyzer's score for the requested mode.

    report = evaluation_report("vae", checkpoint, cfg, n_per_mode=8, on_mode=...)  # a dict of plain data
"""
from __future__ import annotations

import numpy as np

from engines.config import Config
from engines.evaluation.music_stats import segment_statistics
from engines.evaluation.suite import engine_samples, judge_or_none, real_sample, suite_metrics, writes_in_c
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.music.notes import Segment

EXAMPLES = 2  # best and worst segments shown (each)


def evaluation_report(engine: str, checkpoint: str, cfg: Config, n_per_mode: int = 8, seed: int = 0,
                      on_mode=None, bootstrap: int = 100) -> dict:
    """{"engine", "n", "suite" (suite_metrics), "per_mode" rows, "confusion" (8 x 8: requested x heard),
    "statistics" {name: {"real": [...], "generated": [...]}}, "examples" {"best"/"worst": [(Segment, info)]}};
    `on_mode(i, mode)` -> True stops sampling early (the report covers the modes drawn)."""
    if engine == "real":
        pool = real_sample(cfg, "validation", 40 * n_per_mode, seed + 2, in_c=False)
        samples = {m: [s for s in pool if s.meta["mode"] == m][:n_per_mode] for m in MODES}
    else:
        # the raw model, or verified results when generation.verify.candidates asks for candidates
        samples = engine_samples(engine, checkpoint, cfg, n_per_mode, seed, on_mode=on_mode,
                                 candidates=cfg.generation.verify.candidates or 1)
    if not samples:
        raise ValueError("stopped before any mode was sampled")
    judge = judge_or_none(cfg)
    suite = suite_metrics(samples, cfg, judge, seed, in_c=writes_in_c(engine), bootstrap=bootstrap)
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    confusion = np.zeros((len(MODES), len(MODES)), int)
    scored: list[tuple[float, Segment, dict]] = []
    for mode, segments in samples.items():
        for segment in segments:
            if not len(segment.notes):
                continue
            analysis = analyzer.analyze(segment)
            confusion[MODES.index(mode), MODES.index(analysis.mode)] += 1
            score = float(analysis.scores[mode])  # the analyzer's soft score for the mode asked for
            scored.append((score, segment, {"requested": mode, "heard": analysis.mode, "score": round(score, 3)}))
    scored.sort(key=lambda item: -item[0])
    real = real_sample(cfg, "test", 400, seed, writes_in_c(engine))
    real_stats, generated_stats = segment_statistics(real), segment_statistics([s for _, s, _ in scored])
    consistency, judged = suite["analyzer"]["consistency"]["per_mode"], suite.get("judge", {}).get("consistency", {})
    diversity = suite["diversity"]["per_mode"]
    per_mode = [{"mode": m, "samples": len(samples.get(m, [])), "analyzer": consistency.get(m),
                 "judge": (judged or {}).get("per_mode", {}).get(m),
                 "intra_class_variance": diversity.get(m, {}).get("intra_class_variance"),
                 "mean_pairwise_distance": diversity.get(m, {}).get("mean_pairwise_distance")}
                for m in MODES if m in samples]
    return {"engine": engine, "n": len(scored), "suite": suite, "per_mode": per_mode, "confusion": confusion.tolist(),
            "statistics": {k: {"real": real_stats[k].round(4).tolist(), "generated": generated_stats[k].round(4).tolist()}
                           for k in real_stats},
            "examples": {"best": [(s, i) for _, s, i in scored[:EXAMPLES]],
                         "worst": [(s, i) for _, s, i in scored[::-1][:EXAMPLES]]}}


# The headline numbers of one evaluation, in the order the Evaluate tab and `python -m engines compare` show them.
COMPARISON_ROWS = (
    ("segments", "segments measured"),
    ("frechet", "Fréchet distance"),
    ("embedding", "  in the embedding of"),
    ("frechet_interval", "  95 % bootstrap interval"),
    ("real_baseline", "  real-vs-real baseline"),
    ("judge_consistency", "mode heard by the judge"),
    ("analyzer_consistency", "mode heard by the analyzer"),
    ("mean_pairwise_distance", "mean pairwise distance (all modes)"),
    ("near_copy_rate", "near copies of training segments"),
    ("rare_near_copy_rate", "  of a rare one (not a corpus idiom)"),
    ("duplicate_rate", "duplicates of training segments"),
    ("empty_rate", "empty outputs"),
    ("music_stats_overlap", "musical statistics overlap with real (mean)"),
    ("axes_mae", "asked vs heard axes: mean absolute error (raw)"),
    ("axes_mae_unconditioned", "  the same, nothing asked (the floor)"),
    ("axes_near_copies", "  near copies of training segments among them"),
    ("verified_candidates", "verified: candidates per result"),
    ("verified_analyzer", "  verified: mode heard by the analyzer"),
    ("verified_worst_mode", "  verified: its worst mode"),
    ("verified_near_copy_rate", "  verified: near copies"),
    ("latency_raw_ms", "one segment, raw (ms)"),
    ("latency_verified_ms", "one segment, verified (ms)"),
)


def comparison_row(engine: str, suite: dict) -> dict:
    """The headline numbers (COMPARISON_ROWS keys) of one suite result: an `evaluate` JSON (the suite's keys at
    its top level) or a report's "suite"."""
    frechet, copies = suite["frechet"], suite["diversity"]["copies"]
    overlaps = [v["overlap"] for v in suite["music_stats"].values() if v.get("overlap") is not None]
    judge = suite.get("judge", {}).get("consistency", {}).get("overall")
    overall = suite["diversity"]["per_mode"].get("overall", {})
    return {"engine": engine, "segments": overall.get("n"),
            "frechet": frechet["distance"], "embedding": frechet.get("embedding"),
            "frechet_interval": frechet.get("interval"),
            "real_baseline": frechet["real_baseline"], "judge_consistency": judge,
            "analyzer_consistency": suite["analyzer"]["consistency"]["overall"],
            "mean_pairwise_distance": overall.get("mean_pairwise_distance"),
            "near_copy_rate": copies.get("near_copy_rate"), "rare_near_copy_rate": copies.get("rare_near_copy_rate"),
            "duplicate_rate": copies.get("duplicate_rate"),
            "empty_rate": suite.get("empty_rate"),
            "music_stats_overlap": round(float(np.mean(overlaps)), 4) if overlaps else None,
            "axes_mae": suite.get("axes", {}).get("mae"),
            "axes_mae_unconditioned": suite.get("axes", {}).get("mae_unconditioned"),
            "axes_near_copies": suite.get("axes", {}).get("copies", {}).get("near_copy_rate"),
            **verified_row(suite)}


def verified_row(report: dict) -> dict:
    """The verified-generation numbers of an `evaluate --candidates K` JSON (empty without them)."""
    if "verification" not in report or not report["consistency"]["verified"]["per_mode"]:
        return {}
    verified = report["consistency"]["verified"]
    worst = min(verified["per_mode"], key=verified["per_mode"].get)
    latency = report["latency_ms"]
    return {"verified_candidates": report["verification"]["candidates"], "verified_analyzer": verified["overall"],
            "verified_worst_mode": f"{worst} {verified['per_mode'][worst]:.2f}",
            "verified_near_copy_rate": report["copies"]["verified"]["near_copy_rate"],
            "latency_raw_ms": latency["raw"], "latency_verified_ms": latency["verified"]}


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows of comparison_row side by side: headers ("", engine, ...) and one line of text per number."""
    def cell(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, list):
            return "–".join(f"{v:.2f}" for v in value)
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    return ["", *(r["engine"] for r in rows)], [[label, *(cell(r.get(key)) for r in rows)]
                                                for key, label in COMPARISON_ROWS]


def comparison_markdown(rows: list[dict]) -> str:
    headers, body = comparison_table(rows)
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * len(rows)]
    return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in body])
