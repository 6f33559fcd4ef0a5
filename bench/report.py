"""The benchmark's outputs: medians over rounds, ratios to the in-process floor, a table, JSON and a chart."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections import defaultdict
from pathlib import Path

from bench.overload import OverloadResult
from bench.workload import RunSummary, median_of

FLOOR = "engine in-process"


def combine(summaries: list[RunSummary]) -> dict[str, dict[int, dict]]:
    """Per system and concurrency, the median of each figure over the rounds."""
    grouped: dict[tuple[str, int], list[RunSummary]] = defaultdict(list)
    for summary in summaries:
        grouped[(summary.system, summary.concurrency)].append(summary)
    combined: dict[str, dict[int, dict]] = defaultdict(dict)
    for (system, concurrency), runs in grouped.items():
        combined[system][concurrency] = {
            "ttft": {q: median_of([r.ttft[q] for r in runs]) for q in ("p50", "p90", "p99")},
            "inter_token": {q: median_of([r.inter_token[q] for r in runs]) for q in ("p50", "p90", "p99")},
            "end_to_end": {q: median_of([r.end_to_end[q] for r in runs]) for q in ("p50", "p90", "p99")},
            "output_tokens_per_second": median_of([r.output_tokens_per_second for r in runs]),
            "requests_per_second": median_of([r.requests_per_second for r in runs]),
            "failures": sum(r.failures for r in runs),
            "rounds": len(runs),
        }
    return dict(combined)


def ratios_to_floor(combined: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
    floor = combined[FLOOR]
    ratios: dict[str, dict[int, dict]] = defaultdict(dict)
    for system, by_concurrency in combined.items():
        for concurrency, figures in by_concurrency.items():
            base = floor[concurrency]
            ratios[system][concurrency] = {
                "ttft_p50_added_ms": 1000 * (figures["ttft"]["p50"] - base["ttft"]["p50"]),
                "tokens_per_second_ratio": figures["output_tokens_per_second"] / base["output_tokens_per_second"],
            }
    return dict(ratios)


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def table(combined: dict, ratios: dict, mesh_cpu: dict, overload: list[OverloadResult]) -> str:
    lines = []
    for concurrency in sorted({c for figures in combined.values() for c in figures}):
        lines.append(f"\nconcurrency {concurrency}")
        lines.append(f"  {'system':<20} {'TTFT p50':>9} {'p90':>7} {'p99':>7} {'ITL p50':>8} {'E2E p50':>8} "
                     f"{'tok/s':>7} {'req/s':>6} {'vs floor':>9} {'+TTFT':>7} {'failed':>6}")  # fmt: skip
        for system, figures in combined.items():
            f, r = figures[concurrency], ratios[system][concurrency]
            ttft, e2e = f["ttft"], f["end_to_end"]
            lines.append(
                f"  {system:<20} {_ms(ttft['p50']):>9} {_ms(ttft['p90']):>7} {_ms(ttft['p99']):>7} "
                f"{_ms(f['inter_token']['p50']):>8} {_ms(e2e['p50']):>8} {f['output_tokens_per_second']:>7.1f} "
                f"{f['requests_per_second']:>6.2f} {r['tokens_per_second_ratio']:>8.2f}x {r['ttft_p50_added_ms']:>6.1f}"
                f" {f['failures']:>6}"
            )
    lines.append("\nCPU seconds per 1,000 streamed tokens (mesh processes, engine excluded)")
    lines += [f"  {name:<24} {value:.3f}" for name, value in mesh_cpu.items()]
    lines.append("\noverload (3x capacity, mixed priorities)")
    for result in overload:
        lines.append(
            f"  {result.system:<20} HIGH TTFT p99 {_ms(result.high_ttft['p99'])} ms, HIGH answered "
            f"{100 * result.high_answered_share:.0f}%, all answered in deadline "
            f"{100 * result.answered_within_deadline_share:.0f}%, refused at once {result.rejected} "
            f"(in p50 {_ms(result.rejection_seconds['p50'])} ms, p99 {_ms(result.rejection_seconds['p99'])} ms), "
            f"shed after waiting {result.shed}"
        )
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f}"


def write_json(path: Path, **sections: object) -> None:
    def plain(value: object) -> object:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

    path.write_text(json.dumps({key: plain(value) for key, value in sections.items()}, indent=2, default=plain))
