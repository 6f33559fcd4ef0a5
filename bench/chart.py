"""The benchmark's charts: latency and throughput per system and concurrency with the overload comparison
(latest.png), and the mesh's own ceiling with the simulated engine (relay.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.overload import OverloadResult  # noqa: E402
from bench.relay import STALL_TARGET_SECONDS  # noqa: E402


def write_chart(path: Path, combined: dict, overload: list[OverloadResult], title: str) -> None:
    systems = list(combined)
    concurrencies = sorted({c for figures in combined.values() for c in figures})
    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = [
        (axes[0][0], "time to first token p50 (ms, log scale)", lambda f: 1000 * (f["ttft"]["p50"] or 0)),
        (axes[0][1], "output tokens per second", lambda f: f["output_tokens_per_second"] or 0),
        (axes[1][0], "end-to-end latency p50 (ms, log scale)", lambda f: 1000 * (f["end_to_end"]["p50"] or 0)),
    ]
    width = 0.8 / len(systems)
    for axis, label, pick in panels:
        for index, system in enumerate(systems):
            values = [pick(combined[system][c]) for c in concurrencies]
            positions = [position + index * width for position in range(len(concurrencies))]
            axis.bar(positions, values, width, label=system, yerr=_round_spread(combined[system], concurrencies,
                                                                                 values, label))  # fmt: skip
        axis.set_xticks([p + width * (len(systems) - 1) / 2 for p in range(len(concurrencies))])
        axis.set_xticklabels([f"concurrency {c}" for c in concurrencies])
        axis.set_title(label)
        if "ms" in label:
            # Queueing at concurrency 16 is seconds, one request alone tens of milliseconds: both must show.
            axis.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    _overload_panel(axes[1][1], overload)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _round_spread(figures: dict, concurrencies: list[int], medians: list[float], label: str) -> list | None:
    """Throughput's least and most over rounds, as error bars about the median."""
    if label != "output tokens per second":
        return None
    rounds = [figures[c]["by_round"]["output_tokens_per_second"] for c in concurrencies]
    return [[m - min(r) for m, r in zip(medians, rounds, strict=True)],
            [max(r) - m for m, r in zip(medians, rounds, strict=True)]]  # fmt: skip


def write_relay_chart(path: Path, relay: dict, title: str) -> None:
    """Tokens per second and the longest stall against concurrent streams, one line per path, with the
    least and most over rounds as error bars."""
    figure, (throughput, stall) = plt.subplots(1, 2, figsize=(13, 5))
    for name in dict.fromkeys(cell["path"] for cell in relay["cells"]):
        cells = sorted((c for c in relay["cells"] if c["path"] == name), key=lambda c: c["concurrency"])
        streams = [cell["concurrency"] for cell in cells]
        for axis, figure_name in ((throughput, "tokens_per_second"), (stall, "longest_stall_ms")):
            spread = [cell[figure_name] for cell in cells]
            medians = [s["median"] for s in spread]
            errors = [[m - s["min"] for m, s in zip(medians, spread, strict=True)],
                      [s["max"] - m for m, s in zip(medians, spread, strict=True)]]  # fmt: skip
            axis.errorbar(streams, medians, yerr=errors, marker="o", capsize=3, label=name)
    per_stream = relay["settings"]["tokens_per_second"]
    throughput.set_title(f"tokens per second relayed (each stream {per_stream:.0f} tok/s)")
    stall.set_title("longest stall between two messages of a stream (ms)")
    stall.axhline(1000 * STALL_TARGET_SECONDS, color="gray", linestyle="--", label="target")
    for axis in (throughput, stall):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent streams")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _overload_panel(axis, overload: list[OverloadResult]) -> None:
    names = [result.system for result in overload]
    high_p99 = [1000 * (result.high_ttft["p99"] or 0) for result in overload]
    bars = axis.bar(names, high_p99, color=["tab:orange", "tab:red"][: len(names)])
    for bar, result in zip(bars, overload, strict=True):
        share = f"{100 * result.answered_within_deadline_share:.0f}% in deadline"
        axis.annotate(share, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    axis.set_title("overload 3x capacity: HIGH priority TTFT p99 (ms)")
