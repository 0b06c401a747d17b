"""Evaluation reports for the Evaluate tab: run the shared suite on an engine (or on real segments) with
progress and Stop, and turn the report into files and examples to hear. A mixin of engines.api.StudioEngine.
"""
from __future__ import annotations

import threading
import time

from engines.api.worker import streamed
from engines.errors import StudioError
from engines.music.analyzer import MODES


def with_settings(cfg, settings: dict | None):
    """`cfg` with generation.sampling overrides given as a mapping (nested mappings are sections), checked as
    the config checks them; "candidates" is generation.verify.candidates."""
    from engines.config import with_overrides

    overrides = []

    def flatten(prefix: str, values: dict):
        for key, value in values.items():
            if isinstance(value, dict):
                flatten(f"{prefix}{key}.", value)
            else:
                overrides.append(f"{prefix}{key}={'null' if value is None else value}")

    settings = dict(settings or {})
    if "candidates" in settings:
        overrides.append(f"generation.verify.candidates={settings.pop('candidates')}")
    flatten("generation.sampling.", settings)
    return with_overrides(cfg, overrides)


class EvaluationAPI:
    def evaluate_stream(self, engine: str, n_per_mode: int = 8, seed: int = 0, run_id: str | None = None,
                        settings: dict | None = None):
        """Evaluate an engine (or "real") with the shared suite: yields ("progress", done, total, what) while it
        samples, then ("done", report) with the examples rendered ({title, wav, midi, info}) and the report
        written as JSON and CSV. `settings` override generation.sampling keys: the shared ones (temperature,
        top_k) or an engine's section ({"diffusion": {"steps": 20}}); "candidates" sets
        generation.verify.candidates. request_stop(run_id) ends sampling after the current mode (the report
        then covers the modes drawn and says "stopped": True)."""
        from engines.evaluation.report import evaluation_report

        if engine != "real" and engine not in self.engines_available():
            raise StudioError(f"the {engine} engine has no checkpoint installed")
        if not 2 <= n_per_mode <= 64:
            raise StudioError(f"samples per mode must lie in 2..64, got {n_per_mode}")
        cfg = with_settings(self.cfg, settings)
        stop = threading.Event()
        if run_id:
            self._stops[run_id] = stop

        def work(put):
            checkpoint = "" if engine == "real" else str(self.models.checkpoint_path(engine))
            return evaluation_report(engine, checkpoint, cfg, n_per_mode, seed,
                                     on_mode=lambda i, mode: stop.is_set() or put(("progress", i, len(MODES), mode)))

        try:
            report = yield from streamed(work, f"evaluate-{engine}", "evaluation failed")
        finally:
            if run_id:
                self._stops.pop(run_id, None)
        yield ("done", {**self._report_view(report), "stopped": stop.is_set()})

    @staticmethod
    def evaluation_comparison(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
        """Finished evaluate_stream reports side by side: headers ("", engine, ...) and a line per headline
        number (engines/evaluation/report.py COMPARISON_ROWS)."""
        from engines.evaluation.report import comparison_row, comparison_table

        return comparison_table([comparison_row(r["engine"], r["suite"]) for r in reports])

    def _report_view(self, report: dict) -> dict:
        import csv
        import io
        import json

        examples = {}
        for kind, items in report.pop("examples").items():
            examples[kind] = []
            for k, (segment, info) in enumerate(items):
                midi, wav = self.export_segments([segment], f"eval-{report['engine']}-{kind}-{k}")
                examples[kind].append({"title": f"{kind} #{k + 1}: asked {info['requested']}, heard {info['heard']} "
                                                f"(score {info['score']:.2f})", "wav": wav, "midi": midi, **info})
        report["examples"] = examples
        stem = self.out_dir / f"evaluation-{report['engine']}-{int(time.time() * 1000)}"
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps({k: v for k, v in report.items() if k != "statistics"}, indent=1))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(report["per_mode"][0]) if report["per_mode"] else ["mode"])
        writer.writeheader()
        writer.writerows(report["per_mode"])
        csv_path = stem.with_suffix(".csv")
        csv_path.write_text(out.getvalue())
        report["files"] = [str(json_path), str(csv_path)]
        return report

