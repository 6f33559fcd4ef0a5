"""Interactive latency with a batch running: what a 200-job LOW batch does to HIGH and NORMAL requests.

One interactive user (a request, then a pause) sends HIGH and NORMAL requests in turn: first on an idle
mesh (the baseline), then while a batch of LOW jobs, submitted through the jobs API, keeps the runner busy.
The ratio of the two p99 times to first token, per priority, is the figure; the batch must still finish.
Background work yields to interactive work (the scheduler recalls it), so the ratio should stay near 1.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass

from bench.clients import MeshGrpcClient
from bench.processes import Mesh
from bench.workload import distribution

PRIORITIES = ("HIGH", "NORMAL")
# The interactive user's pause between requests: the idle capacity the batch fills.
THINK_SECONDS = 0.3
# The most a batch of this size may take to finish, interactive traffic and all.
BATCH_FINISHES_WITHIN_SECONDS = 900.0


@dataclass(frozen=True)
class BatchPlan:
    jobs: int
    job_tokens: int
    interactive_requests: int
    interactive_tokens: int


FULL_BATCH = BatchPlan(jobs=100, job_tokens=16, interactive_requests=40, interactive_tokens=8)
QUICK_BATCH = BatchPlan(jobs=40, job_tokens=8, interactive_requests=12, interactive_tokens=4)


def batch_interference(mesh: Mesh, client: MeshGrpcClient, plan: BatchPlan) -> dict:
    baseline = _interactive(client, plan)
    batch_id, submitted_at = _submit_batch(mesh, plan), time.monotonic()
    during = _interactive(client, plan)
    progress_after_interactive = _batch_status(mesh, batch_id)
    final = _wait_for_batch(mesh, batch_id)
    finished_in = time.monotonic() - submitted_at
    result = {
        "jobs": plan.jobs,
        "job_tokens": plan.job_tokens,
        "interactive_requests": plan.interactive_requests,
        "batch_finished": final["completed"] == plan.jobs,
        "batch_seconds": finished_in,
        "batch_completed_while_interactive": progress_after_interactive["completed"],
        "batch_counts": final,
    }
    for priority in PRIORITIES:
        before, with_batch = distribution(baseline[priority]), distribution(during[priority])
        result[priority] = {
            "ttft_without_batch": before,
            "ttft_with_batch": with_batch,
            "p99_ratio": with_batch["p99"] / before["p99"] if before["p99"] else None,
            "failed": plan.interactive_requests // len(PRIORITIES) - len(during[priority]),
        }
    return result


def describe(result: dict) -> str:
    lines = [f"interactive time to first token with a {result['jobs']}-job LOW batch running "
             f"(batch finished: {result['batch_finished']}, in {result['batch_seconds']:.0f}s; "
             f"{result['batch_completed_while_interactive']} jobs done while interactive traffic ran)"]  # fmt: skip
    for priority in PRIORITIES:
        figures = result[priority]
        lines.append(
            f"  {priority:<6} p99 {figures['ttft_without_batch']['p99'] * 1000:6.1f} ms without, "
            f"{figures['ttft_with_batch']['p99'] * 1000:6.1f} ms with: {figures['p99_ratio']:.2f}x"
        )
    return "\n".join(lines)


def _interactive(client: MeshGrpcClient, plan: BatchPlan) -> dict[str, list[float]]:
    ttft: dict[str, list[float]] = {priority: [] for priority in PRIORITIES}
    for index in range(plan.interactive_requests):
        priority = PRIORITIES[index % len(PRIORITIES)]
        measured = client.stream(plan.interactive_tokens, priority, deadline=60)
        if measured.status == "ok" and measured.first_token is not None:
            ttft[priority].append(measured.first_token)
        time.sleep(THINK_SECONDS)
    return ttft


def _submit_batch(mesh: Mesh, plan: BatchPlan) -> str:
    lines = [{"custom_id": f"line-{n}", "request": {"prompt": f"Write one sentence about the number {n}.",
                                                   "max_tokens": plan.job_tokens, "temperature": 0}}
             for n in range(plan.jobs)]  # fmt: skip
    return _call(mesh, "POST", "/v1/async/submit-batch", {"lines": lines})["batch_id"]


def _batch_status(mesh: Mesh, batch_id: str) -> dict:
    return _call(mesh, "GET", f"/v1/async/batch-status/{batch_id}")["batch"]


def _wait_for_batch(mesh: Mesh, batch_id: str) -> dict:
    deadline = time.monotonic() + BATCH_FINISHES_WITHIN_SECONDS
    while True:
        status = _batch_status(mesh, batch_id)
        if status["queued"] == status["running"] == 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _call(mesh: Mesh, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{mesh.ports['edge_http']}{path}", data=data, method=method,
        headers={"authorization": f"Bearer {mesh.api_key}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())
