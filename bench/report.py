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
    """Per system and concurrency, the median of each figure over the rounds; for throughput and the median
    time to first token, every round's figure too, so that a reader sees the spread beside the median."""
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
            "by_round": {
                "output_tokens_per_second": [r.output_tokens_per_second for r in runs],
                "ttft_p50": [r.ttft["p50"] for r in runs],
            },
            "failures": sum(r.failures for r in runs),
            "rounds": len(runs),
        }
    return dict(combined)


def ratios_to(combined: dict[str, dict[int, dict]], baseline: str = FLOOR) -> dict[str, dict[int, dict]]:
    """Each system against the baseline, round by round (the rounds are interleaved, so a round's figures
    were measured minutes apart at most): the median over rounds, with the least and the most."""
    base_figures = combined[baseline]
    ratios: dict[str, dict[int, dict]] = defaultdict(dict)
    for system, by_concurrency in combined.items():
        for concurrency, figures in by_concurrency.items():
            if concurrency not in base_figures:
                continue
            mine, base = figures["by_round"], base_figures[concurrency]["by_round"]
            throughput = [a / b for a, b in zip(mine["output_tokens_per_second"], base["output_tokens_per_second"],
                                                strict=False) if b]  # fmt: skip
            added = [1000 * (a - b) for a, b in zip(mine["ttft_p50"], base["ttft_p50"], strict=False)
                     if a is not None and b is not None]  # fmt: skip
            ratios[system][concurrency] = {
                "tokens_per_second_ratio": median_of(throughput),
                "tokens_per_second_ratio_range": _range(throughput),
                "ttft_p50_added_ms": median_of(added),
                "ttft_p50_added_ms_range": _range(added),
            }
    return dict(ratios)


def _range(values: list[float]) -> list[float] | None:
    return [min(values), max(values)] if values else None


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def table(combined: dict, ratios: dict, mesh_cpu: dict, overload: list[OverloadResult], peer: str | None = None,
          peer_ratios: dict | None = None) -> str:  # fmt: skip
    """Medians over rounds, each with its [least, most] over rounds; ratios to the floor, and to `peer`."""
    lines = []
    versus = f"vs {peer}" if peer and peer_ratios else ""
    for concurrency in sorted({c for figures in combined.values() for c in figures}):
        lines.append(f"\nconcurrency {concurrency}")
        lines.append(f"  {'system':<20} {'TTFT p50':>9} {'p90':>7} {'p99':>7} {'ITL p50':>8} {'E2E p50':>8} "
                     f"{'tok/s [least, most]':>20} {'vs floor':>19} {'+TTFT ms':>19} {versus:>22} "
                     f"{'failed':>6}")  # fmt: skip
        for system, figures in combined.items():
            f, r = figures[concurrency], ratios[system][concurrency]
            ttft, e2e = f["ttft"], f["end_to_end"]
            against = peer_ratios[system][concurrency] if versus else None
            vs_peer = ratio_text(against) if against else ""
            lines.append(
                f"  {system:<20} {_ms(ttft['p50']):>9} {_ms(ttft['p90']):>7} {_ms(ttft['p99']):>7} "
                f"{_ms(f['inter_token']['p50']):>8} {_ms(e2e['p50']):>8} "
                f"{throughput_text(f):>20} "
                f"{ratio_text(r):>19} "
                f"{_spread(r['ttft_p50_added_ms'], r['ttft_p50_added_ms_range'], '.1f'):>19} "
                f"{vs_peer:>22}"
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


def throughput_text(figures: dict) -> str:
    """A cell's output tokens a second: the median over rounds, [the least, the most]."""
    by_round = figures["by_round"]["output_tokens_per_second"]
    return _spread(figures["output_tokens_per_second"], [min(by_round), max(by_round)], ".1f")


def ratio_text(ratios: dict) -> str:
    """A throughput ratio from ratios_to: the median over rounds, [the least, the most]."""
    return _spread(ratios["tokens_per_second_ratio"], ratios["tokens_per_second_ratio_range"], ".2f", "x")


def _spread(median: float | None, least_most: list[float] | None, form: str, unit: str = "") -> str:
    if median is None:
        return "-"
    if not least_most:
        return f"{median:{form}}{unit}"
    return f"{median:{form}}{unit} [{least_most[0]:{form}}, {least_most[1]:{form}}]"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f}"


def write_json(path: Path, **sections: object) -> None:
    def plain(value: object) -> object:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

    path.write_text(json.dumps({key: plain(value) for key, value in sections.items()}, indent=2, default=plain))
