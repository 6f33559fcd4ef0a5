import pytest
from pydantic import ValidationError

from orchestrator.scheduler.core.pressure import DEFAULT_POLICIES, ModelsAdmitted, PressureLevel
from orchestrator.scheduler.settings import SchedulerSettings
from services.shared.domain import Priority

GIB = 1024**3


def settings(*flags: str) -> SchedulerSettings:
    return SchedulerSettings(_cli_parse_args=["--plaintext", *flags])


def test_the_policy_is_configured_from_flags() -> None:
    policy = settings(
        "--pressure-boundaries", "0.4,0.6,0.8,0.9", "--thermal-celsius", "60,75,80", "--memory-budget", "3GiB"
    ).pressure_policy()
    assert policy.budget_bytes == 3 * GIB
    assert policy.thresholds.start_of(PressureLevel.HIGH) == 0.6 and policy.thermal.pause == 75.0


def test_defaults_are_design_md_and_no_budget() -> None:
    policy = settings().pressure_policy()
    assert [policy.thresholds.start_of(level) for level in PressureLevel] == [0.0, 0.5, 0.7, 0.85, 0.95]
    assert (policy.thermal.reduce, policy.thermal.pause, policy.thermal.stop) == (65.0, 80.0, 85.0)
    assert policy.budget_bytes is None


def test_a_level_policy_can_be_replaced_and_the_others_keep_their_defaults() -> None:
    high = '{"HIGH": {"models": "all", "concurrency_share": 0.5, "max_concurrency": 4, "lowest_priority": "LOW"}}'
    policies = settings("--level-policies", high).pressure_policy().thresholds.policies
    assert policies[PressureLevel.HIGH].models is ModelsAdmitted.ALL
    assert policies[PressureLevel.HIGH].lowest_priority_started is Priority.LOW
    assert policies[PressureLevel.HIGH].max_concurrency == 4
    assert policies[PressureLevel.CRITICAL] == DEFAULT_POLICIES[PressureLevel.CRITICAL]


@pytest.mark.parametrize(
    "flags",
    [
        ("--pressure-boundaries", "0.9,0.6,0.8,0.95"),
        ("--thermal-celsius", "80,65,85"),
        ("--memory-budget", "lots"),
        ("--oom-recovery-seconds", "0"),
        ("--level-policies", '{"HIGH": {"models": "some", "concurrency_share": 1, "lowest_priority": "LOW"}}'),
        ("--level-policies", '{"SEVERE": {"models": "all", "concurrency_share": 1, "lowest_priority": "LOW"}}'),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused_at_start(flags: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        settings(*flags)


def test_monitors_are_addresses_or_dns_names_one_flag_each() -> None:
    parsed = settings("--monitor", "10.0.0.1:50071", "--monitor", "dns:gpu-monitor.meshserve.svc:50071")
    assert parsed.monitor == ["10.0.0.1:50071", "dns:gpu-monitor.meshserve.svc:50071"]
    for bad in ("10.0.0.1", "dns:gpu-monitor", "host:port"):
        with pytest.raises(ValidationError, match="HOST:PORT or dns:NAME:PORT"):
            settings("--monitor", bad)
