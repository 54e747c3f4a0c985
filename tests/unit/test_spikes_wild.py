"""Cause scoring on the failures issue 12 saw in the wild, rebuilt from its numbers.

Each case is a 10-minute baseline and a one-minute spike on a 2-core host, as in
test_spikes_causes.py; what differs is what the wild showed: a deploy event nothing
carried, a socket read that grows because the server's threads are starved, a host whose
baseline is already busy, and a payload shift during a traffic surge.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from pyrometer.agent.shared.model import Frame
from pyrometer.collector.analysis import stages
from pyrometer.collector.analysis.causes import MIN_SCORE, rank
from pyrometer.collector.analysis.evidence import (
    CodeProfile,
    EventInfo,
    ResourcePoint,
    SpikeContext,
)
from pyrometer.collector.analysis.inputs import (
    CodeProfiles,
    StackFacts,
    code_profile,
    resource_points,
    size_unit,
)
from pyrometer.collector.analysis.waiting import is_waiting, is_waiting_label
from pyrometer.collector.model import Profile
from pyrometer.collector.storage.reads import ProcessPoint, RequestSample, RequestTally
from support.spikes import END, ONSET, SPIKE, START, STEP, T0, S


def requests(t_from: int, t_to: int, rng: random.Random, rate: float, size_factor: float = 1.0,
             slow: float = 1.0, version: str = "1.0.2") -> list[RequestSample]:
    """`rate` requests a second (fractions spread over the seconds), latency 10 + 0.02 * size."""
    out = []
    seconds = (t_to - t_from) // S
    for k in range(round(rate * seconds)):
        size = size_factor * rng.lognormvariate(math.log(1000) - 0.18, 0.6)
        ms = slow * (10.0 + 0.02 * size) * rng.lognormvariate(0, 0.1)
        out.append(RequestSample(t_from + k * S // round(rate) + rng.randrange(S // 10), ms,
                                 size, version))
    return out


def points(t_from: int, steps: int, target: Sequence[float], other: Sequence[float],
           psi: Sequence[float]) -> list[ResourcePoint]:
    """One point a step; each signal cycles through its values (a noisy baseline)."""
    return [ResourcePoint(t_from + i * STEP, target[i % len(target)],
                          target[i % len(target)] + other[i % len(other)], 2,
                          psi[i % len(psi)], 0.0, 0.0, 2e9) for i in range(steps)]


def flat(requests: int, per_request: float) -> CodeProfile:
    shares = {"serve (app.py)": 1.0, "model_forward (inference.py)": 0.7,
              "preprocess (inference.py)": 0.2}
    total = round(requests * per_request)
    return CodeProfile({fn: round(s * total) for fn, s in shares.items()}, total, requests)


# --- a deploy event nothing carried -------------------------------------------------


def surge_after_an_uncarried_deploy() -> SpikeContext:
    """Arrivals 9.1/s -> 19.8/s with longer inputs; a deploy of 1.0.3 23 s before the
    onset that no request or sample carries (they all say 1.0.2)."""
    rng = random.Random(31)
    base = requests(T0, START, rng, rate=9.1)
    inside = requests(START, END, rng, rate=19.8, size_factor=1.6, slow=2.2)
    # the target's CPU follows the work: twice the requests, each 1.6x the size
    res = points(T0, 60, [0.55, 0.6, 0.65], [0.05], [2.0, 3.0]) + points(
        START, 6, [1.85], [0.1], [40.0])
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), events=(EventInfo(ONSET - 23 * S, "deploy", "1.0.3", "1.0.2"),),
        baseline_profile=flat(len(base), 5.0), spike_profile=flat(len(inside), 8.0))


@pytest.mark.parametrize(("total", "sized", "unit"), [
    (100, 80, "app size"), (100, 100, "app size"), (100, 79, "bytes"), (100, 0, "bytes"),
    (0, 0, "bytes"),
])
def test_sizes_are_judged_in_the_unit_most_requests_carry(total: int, sized: int,
                                                          unit: str) -> None:
    tally = RequestTally(total, {}, {}, 0, 0, {}, None, sized)
    assert size_unit(tally) == unit


def test_a_deploy_that_nothing_carries_and_that_changed_nothing_scores_near_zero() -> None:
    ranking = rank(surge_after_an_uncarried_deploy())
    deploy = next(c for c in ranking.checked if c.kind == "deploy")
    assert deploy.score < 0.1, deploy
    assert deploy.evidence["new_version_requests"] == 0
    assert "no request or sample carries that version" in deploy.explanation
    assert "latency per request unchanged across it" in deploy.explanation
    assert ranking.causes and ranking.causes[0].kind in {"traffic_surge", "payload_size"}, \
        ranking.causes


def test_a_blip_between_an_uncarried_deploy_and_the_onset_is_not_the_deploys_doing() -> None:
    # A restart's cold start after the deploy event made its own short spike (detected,
    # so excluded from the baseline); its slow requests are not evidence that the deploy
    # changed latency per request (seen in the evaluation: deploy 0.9, "+320% size for size").
    ctx = surge_after_an_uncarried_deploy()
    blip = (ONSET - 15 * S, ONSET - 5 * S)
    slowed = tuple(r._replace(latency_ms=r.latency_ms * 8) if blip[0] <= r.end_ns < blip[1] else r
                   for r in ctx.requests)
    ranking = rank(replace(ctx, requests=slowed, excluded=(blip,)))
    deploy = next(c for c in ranking.checked if c.kind == "deploy")
    assert deploy.score < 0.1, deploy
    assert ranking.causes and ranking.causes[0].kind in {"traffic_surge", "payload_size"}


def late_onset_after_an_uncarried_deploy(slow_from_s: float, slow: float) -> SpikeContext:
    """A held-out run's timeline: a deploy 26.5 s before the detected onset that nothing
    carries, and every request that ended from `slow_from_s` before the onset on `slow`
    times slower (the detector's onset lagging the real one)."""
    ctx = surge_after_an_uncarried_deploy()
    since = ONSET - round(slow_from_s * S)
    slowed = tuple(r._replace(latency_ms=r.latency_ms * slow) if since <= r.end_ns < START
                   else r for r in ctx.requests)
    event = EventInfo(ONSET - 26_500_000_000, "deploy", "1.0.3", "1.0.2")
    return replace(ctx, requests=slowed, events=(event,))


def test_a_fault_in_the_steps_before_a_late_onset_is_not_the_deploys_doing() -> None:
    # the fault began 11 s before the onset it was detected at, 15.5 s after the deploy
    # (before the change: "+33% size for size in the 529 requests", deploy 0.83, first)
    ranking = rank(late_onset_after_an_uncarried_deploy(slow_from_s=11, slow=2.1))
    deploy = next(c for c in ranking.checked if c.kind == "deploy")
    assert deploy.score < 0.1, deploy
    assert "latency per request unchanged across it" in deploy.explanation
    assert "first 13s after it" in deploy.explanation


def test_a_deploy_that_slowed_requests_from_its_first_ones_still_explains() -> None:
    # the same deploy, and requests slower from the moment it happened
    ranking = rank(late_onset_after_an_uncarried_deploy(slow_from_s=26.5, slow=2.1))
    deploy = next(c for c in ranking.causes + ranking.checked if c.kind == "deploy")
    assert "latency per request changed across it" in deploy.explanation, deploy
    assert deploy.evidence["rise_across_event"] > 0.5


def test_an_uncarried_deploy_that_made_each_request_costlier_still_explains() -> None:
    # the same event at the onset, nothing on the requests, and the target's CPU per
    # request doubled at the same sizes and rate: the change shows in the cost
    rng = random.Random(32)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=2.2)
    res = points(T0, 60, [0.55, 0.6, 0.65], [0.05], [2.0]) + points(
        START, 6, [1.25], [0.05], [12.0])
    ctx = SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), events=(EventInfo(ONSET - 2 * S, "deploy", "1.0.3", "1.0.2"),),
        baseline_profile=flat(len(base), 5.0), spike_profile=flat(len(inside), 10.0))
    ranking = rank(ctx)
    assert ranking.causes[0].kind == "deploy", ranking.causes
    assert ranking.causes[0].score > 0.5
    assert "no request or sample carries that version" in ranking.causes[0].explanation


def escalating_spike_with_a_late_uncarried_deploy(cpu_before: float, cpu_after: float) -> SpikeContext:
    """Requests 1.4x slower from the spike's start, 3x from 30 s in (its main rise); a
    deploy nothing carries 32 s in, later than the onset's tolerance but admitted by the
    main rise's; the target's CPU cores in the spike's first three steps and last three."""
    rng = random.Random(35)
    base = requests(T0, START, rng, rate=20)
    mild = requests(START, START + 30 * S, rng, rate=20, slow=1.4)
    main = requests(START + 30 * S, END, rng, rate=20, slow=3.0)
    res = points(T0, 60, [0.55, 0.6, 0.65], [0.05], [2.0]) + points(
        START, 3, [cpu_before], [0.05], [12.0]) + points(START + 30 * S, 3, [cpu_after], [0.05], [12.0])
    # the detector's peak and baseline p99 for these requests: the main rise is the first
    # step past half of it, 30 s in
    spike = replace(SPIKE, baseline_ms=78.0, peak_ms=234.0)
    return SpikeContext(
        spike=spike, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + mild + main),
        resources=tuple(res), events=(EventInfo(START + 32 * S, "deploy", "1.0.3", "1.0.2"),),
        baseline_profile=flat(len(base), 5.0), spike_profile=flat(len(mild + main), 10.0))


def test_a_late_uncarried_deploy_that_changed_no_cost_per_request_did_not_escalate_it() -> None:
    # An in-sample run: a costlier code path switched on at the onset, a decoy deploy of a
    # version nothing carries posted 12 s into the spike (past the tolerance, admitted as
    # the spike's main rise came later); the CPU per request the code path had raised
    # since the onset, spike over baseline, was read as the deploy's doing (deploy 0.57,
    # first; code path 0.54). Across the event, inside the spike, it did not change.
    ctx = escalating_spike_with_a_late_uncarried_deploy(cpu_before=1.25, cpu_after=1.25)
    deploy = next(c for c in rank(ctx).checked if c.kind == "deploy")
    assert deploy.score < MIN_SCORE, deploy
    assert "31s into the spike" in deploy.explanation
    assert "CPU per request across it, inside the spike, unchanged" in deploy.explanation
    assert 0.95 < deploy.evidence["cpu_per_request_ratio_across_event"] < 1.05


def test_a_late_uncarried_deploy_that_made_requests_costlier_from_it_still_explains() -> None:
    # the same escalation, and each request cost twice the CPU from the event on
    ctx = escalating_spike_with_a_late_uncarried_deploy(cpu_before=0.9, cpu_after=1.8)
    deploy = next(c for c in rank(ctx).checked if c.kind == "deploy")
    assert "CPU per request across it, inside the spike, rose" in deploy.explanation, deploy
    assert deploy.score >= MIN_SCORE


# --- waiting frames are symptoms ------------------------------------------------------

SERVE = (Frame("serve_forever", "socketserver.py"), Frame("handle", "server_app.py"))
READ = SERVE + (Frame("read_request", "server_app.py"), Frame("SocketIO.readinto", "socket.py"))
FORWARD = SERVE + (Frame("model_forward", "inference.py"),)
PREPROCESS = SERVE + (Frame("preprocess", "inference.py"),)


def stacks_profile(start: int, end: int, requests: int, per_request: float,
                   shares: dict[tuple[Frame, ...], float]) -> CodeProfile:
    total = requests * per_request
    samples = tuple((stack, round(share * total)) for stack, share in shares.items())
    return code_profile(Profile("svc", start, end, samples), requests)


def test_profiles_that_share_stacks_give_each_its_own_code_profile() -> None:
    # as gather reads them: one CodeProfiles for a spike's profiles, which share stack
    # and frame objects (here READ's leaf waits, the others work)
    def profile(shares: dict[tuple[Frame, ...], int]) -> Profile:
        return Profile("svc", T0, START, tuple(shares.items()))
    first = profile({READ: 18, FORWARD: 60, PREPROCESS: 22})
    second = profile({READ: 48, FORWARD: 38, (*SERVE, Frame("render", "inference.py")): 5})
    shared = CodeProfiles()
    got = [shared.of(first, 10), shared.of(second, 20), shared.of(first, 10)]
    assert got == [code_profile(first, 10), code_profile(second, 20), code_profile(first, 10)]
    assert got[1].waiting == {"SocketIO.readinto (socket.py)": 48}
    assert "render (inference.py)" in got[1].functions
    assert "render (inference.py)" not in got[0].functions


def test_stack_facts_start_again_empty_past_their_bound() -> None:
    facts = StackFacts(max_entries=5)
    rules = stages.DEFAULT_RULES
    profile = Profile("svc", T0, START, ((READ, 18), (FORWARD, 60), (PREPROCESS, 22)))
    with facts.lock:
        stages.split(profile.samples, 10, 100.0, rules, facts.classified(rules))
        expected = facts.profiles.of(profile, 10)
        kept = len(facts.profiles)  # the working stacks and every leaf
        assert kept == 5
        facts.trim()  # with the classified stacks and functions, past 5
        assert len(facts.profiles) == 0 and not facts.classified(rules).stacks
        assert facts.profiles.of(profile, 10) == expected
        facts.max_entries = 100
        facts.trim()
        assert len(facts.profiles) == kept


def starved_behind_a_busy_baseline() -> SpikeContext:
    """Other processes used about 0.7 of the 2 cores in the baseline (noisily), then CPU
    burners took the host to 1.98 cores; PSI cpu some 10.8% -> 74.5%. The target's CPU
    per request is flat; its threads wait for a core, and a socket read's share of the
    samples grows 18% -> 48%."""
    rng = random.Random(33)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.8)
    # others 0.48 / 0.70 / 0.92 cores: median 0.7, MAD 0.22, so 1.43 is z 2.2
    res = points(T0, 60, [0.6], [0.48, 0.70, 0.92], [6.0, 10.8, 15.6]) + points(
        START, 6, [0.55], [1.43], [74.5])
    baseline = stacks_profile(T0, START, len(base), 5.0,
                              {READ: 0.18, FORWARD: 0.6, PREPROCESS: 0.22})
    spike = stacks_profile(START, END, len(inside), 9.0,
                           {READ: 0.48, FORWARD: 0.38, PREPROCESS: 0.14})
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=baseline, spike_profile=spike)


def test_a_socket_read_that_grows_while_starved_is_not_a_code_path() -> None:
    ranking = rank(starved_behind_a_busy_baseline())
    code = next(c for c in ranking.checked if c.kind == "code_path")
    assert code.score < MIN_SCORE, code
    assert "readinto" not in code.explanation or "waiting" in code.explanation
    assert ranking.causes and ranking.causes[0].kind == "host_pressure", ranking.causes


def test_a_new_costly_function_is_still_a_code_path_when_waits_are_left_out() -> None:
    # the same server, a render that got costlier: on-CPU work, not waiting
    rng = random.Random(34)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.6)
    render = SERVE + (Frame("postprocess_render_json_costly", "inference.py"),)
    res = points(T0, 60, [0.6], [0.05], [2.0]) + points(START, 6, [1.1], [0.05], [10.0])
    ctx = SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res),
        baseline_profile=stacks_profile(T0, START, len(base), 5.0,
                                        {READ: 0.18, FORWARD: 0.6, PREPROCESS: 0.22}),
        spike_profile=stacks_profile(START, END, len(inside), 8.0,
                                     {READ: 0.12, FORWARD: 0.4, PREPROCESS: 0.14, render: 0.34}))
    ranking = rank(ctx)
    assert ranking.causes[0].kind == "code_path", ranking.causes
    assert "postprocess_render_json_costly" in ranking.causes[0].explanation


def test_waiting_frames_match_py_spys_names_old_and_new() -> None:
    assert is_waiting(Frame("SocketIO.readinto", "socket.py"))  # py-spy on Python 3.11+
    assert is_waiting(Frame("readinto", "/usr/lib/python3.10/socket.py"))  # bare, full path
    assert is_waiting(Frame("Condition.wait", "threading.py"))
    assert is_waiting(Frame("_worker", "concurrent/futures/thread.py"))
    assert is_waiting(Frame("_SocketWriter.write", "socketserver.py"))  # the demo's replies
    assert is_waiting_label("EpollSelector.select (selectors.py)")
    assert not is_waiting(Frame("readinto", "mysocket.py"))  # a path boundary, not a suffix
    assert not is_waiting(Frame("model_forward", "inference.py"))
    assert not is_waiting_label("serve")


# --- host pressure behind a busy baseline ---------------------------------------------


def test_host_pressure_behind_a_noisy_baseline_ranks_first_and_clearly() -> None:
    ranking = rank(starved_behind_a_busy_baseline())
    host = ranking.causes[0]
    assert host.kind == "host_pressure", ranking.causes
    # the neighbours' z is only 2.2 against their noisy baseline, but the target was
    # squeezed: the host saturated and PSI cpu some went 10.8% -> 74.5%
    assert host.score > 0.6, host
    assert host.evidence["spike_psi_cpu_some"] == 74.5


def test_a_noisy_neighbour_without_a_squeeze_is_not_host_pressure() -> None:
    # the same noisy baseline, the neighbours a little busier, the host far from full
    # and PSI where it was: the spike is not the host's
    rng = random.Random(35)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.8)
    res = points(T0, 60, [0.6], [0.48, 0.70, 0.92], [6.0, 10.8, 15.6]) + points(
        START, 6, [0.6], [0.9], [12.0])
    ctx = SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=flat(len(base), 5.0),
        spike_profile=flat(len(inside), 5.0))
    assert "host_pressure" not in [c.kind for c in rank(ctx).causes]


def test_a_doubled_psi_counts_however_noisy_its_baseline() -> None:
    # PSI cpu some wandered 5-19% in the baseline (z of 40% only 2.7), the host not
    # full (1.9 of 2 cores busy at most): PSI more than doubling still says the target waited
    rng = random.Random(36)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.8)
    res = points(T0, 60, [0.6], [0.48, 0.70, 0.92], [5.0, 12.0, 19.0]) + points(
        START, 6, [0.55], [1.3], [40.0])
    ctx = SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=flat(len(base), 5.0),
        spike_profile=flat(len(inside), 9.0))
    ranking = rank(ctx)
    assert [c.kind for c in ranking.causes] == ["host_pressure"], ranking.checked
    assert ranking.causes[0].score > 0.5


def crowded_host(others_spike: float) -> SpikeContext:
    """A held-out run's numbers: the host already about 93% busy in the baseline (others
    1.45-1.69 of 2 cores, the target 0.3), then CPU burners: others only 1.72 (z 0.7,
    there was no more to take), the target 0.28, PSI cpu some 44% -> 92%."""
    rng = random.Random(39)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.8)
    res = points(T0, 60, [0.3], [1.45, 1.57, 1.69], [38.0, 44.4, 50.0]) + points(
        START, 6, [0.28], [others_spike], [92.2])
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=flat(len(base), 5.0),
        spike_profile=flat(len(inside), 5.0))


def test_neighbours_that_took_what_a_full_host_had_left_are_host_pressure() -> None:
    ranking = rank(crowded_host(others_spike=1.72))
    assert ranking.causes and ranking.causes[0].kind == "host_pressure", ranking.checked
    host = ranking.causes[0]
    assert host.score > 0.5, host
    assert host.evidence["baseline_host_busy_share"] == 0.935
    # the same doubled PSI with the neighbours where they were: nobody took the cores
    still = rank(crowded_host(others_spike=1.57))
    assert "host_pressure" not in [c.kind for c in still.causes], still.causes


def starved_without_psi(preempted_spike: float | None = None,
                        waited_spike: float | None = None) -> SpikeContext:
    """An 8-core host in a container that hides /proc/pressure (PSI None): neighbours
    wandering 1.5-4.5 cores take 6.5 (z 1.6, the host 7.1 of 8 busy, not full). Where the
    agent read them, the target's threads were preempted 20-30 times per CPU-second in the
    baseline, and waited 0.05-0.11 s in a run queue per CPU-second."""
    rng = random.Random(38)
    base = requests(T0, START, rng, rate=20)
    inside = requests(START, END, rng, rate=20, slow=1.8)

    def at(t_from: int, steps: int, other: Sequence[float], preempted: Sequence[float] | None,
           waited: Sequence[float] | None) -> list[ResourcePoint]:
        return [ResourcePoint(t_from + i * STEP, 0.6, 0.6 + other[i % len(other)], 8, None,
                              None, None, 2e9,
                              None if preempted is None else preempted[i % len(preempted)],
                              None if waited is None else waited[i % len(waited)])
                for i in range(steps)]

    def read(baseline: list[float], spike: float | None) -> tuple[list[float] | None, ...]:
        return (None, None) if spike is None else (baseline, [spike])

    preempted = read([20.0, 25.0, 30.0], preempted_spike)
    waited = read([0.05, 0.08, 0.11], waited_spike)
    res = at(T0, 60, [1.5, 3.0, 4.5], preempted[0], waited[0]) + at(
        START, 6, [6.5], preempted[1], waited[1])
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=flat(len(base), 5.0),
        spike_profile=flat(len(inside), 5.0))


def test_preempted_threads_show_a_squeeze_where_psi_is_hidden() -> None:
    ranking = rank(starved_without_psi(preempted_spike=110.0))
    assert ranking.causes and ranking.causes[0].kind == "host_pressure", ranking.checked
    host = ranking.causes[0]
    assert host.score > 0.45, host
    assert host.evidence["spike_target_preempted_per_cpu_s"] == 110.0
    # the same neighbours, but the target kept its cores: only the busy host speaks
    calm = rank(starved_without_psi(preempted_spike=27.0))
    calm_host = next(c for c in calm.causes + calm.checked if c.kind == "host_pressure")
    assert calm_host.score < 0.25 < host.score, calm_host


def test_time_waiting_in_the_run_queue_shows_a_squeeze_where_psi_is_hidden() -> None:
    ranking = rank(starved_without_psi(waited_spike=0.6))
    assert ranking.causes and ranking.causes[0].kind == "host_pressure", ranking.checked
    host = ranking.causes[0]
    assert host.score > 0.45, host
    assert host.evidence["spike_target_waited_per_cpu_s"] == 0.6
    calm = rank(starved_without_psi(waited_spike=0.09))
    calm_host = next(c for c in calm.causes + calm.checked if c.kind == "host_pressure")
    assert calm_host.score < 0.25 < host.score, calm_host


def test_run_queue_wait_per_cpu_second_comes_from_the_target_processes_schedstat() -> None:
    procs = [ProcessPoint("i", pid, STEP, 2, 0.4, 0.1, 1, 4, 10, 5, wait)
             for pid, wait in ((1, 0.25), (2, None))]
    [point] = resource_points(procs, [], 2.0)
    assert point.target_waited_per_cpu_s == 0.25 / (2 * 0.5)  # waited 0.25 s a second, 1 core
    [unknown] = resource_points([replace(procs[0], run_queue_wait=None)], [], 2.0)
    assert unknown.target_waited_per_cpu_s is None


# --- more than one cause --------------------------------------------------------------


def surge_with_larger_inputs(rate: float, size_factor: float, slow: float) -> SpikeContext:
    """A baseline of 9.1 requests/s; in the spike `rate` of them, `size_factor` larger,
    queueing `slow` times longer; the target's CPU follows requests times size."""
    rng = random.Random(37)
    base = requests(T0, START, rng, rate=9.1)
    inside = requests(START, END, rng, rate=rate, size_factor=size_factor, slow=slow)
    cpu = min(1.9, 0.6 * rate / 9.1 * size_factor ** 0.7)
    res = points(T0, 60, [0.55, 0.6, 0.65], [0.05], [2.0, 3.0]) + points(
        START, 6, [cpu], [0.1], [40.0])
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(res), baseline_profile=flat(len(base), 5.0),
        spike_profile=flat(len(inside), 5.0 * size_factor ** 0.7))


def shares(ctx: SpikeContext) -> dict[str, float]:
    return {c.kind: float(c.evidence["share_of_rise"])  # type: ignore[arg-type]
            for c in rank(ctx).causes if "share_of_rise" in c.evidence}


def test_a_surge_with_longer_inputs_names_both_with_their_shares() -> None:
    # issue 12: arrivals 9.1/s -> 19.8/s with longer inputs; the surge scored 0 because
    # the CPU per request rose, as larger inputs make it do
    ctx = surge_after_an_uncarried_deploy()
    kinds = [c.kind for c in rank(ctx).causes]
    assert kinds[:2] == ["traffic_surge", "payload_size"], rank(ctx).checked
    split = shares(ctx)
    assert split["traffic_surge"] > split["payload_size"] > 0.1
    assert abs(split["traffic_surge"] + split["payload_size"] - 1.0) < 0.05
    surge = rank(ctx).causes[0]
    assert "of the rise that sizes do not explain" in surge.explanation and surge.score > 0.5


def test_the_cause_that_explains_more_of_the_rise_ranks_first() -> None:
    # inputs three times larger and a smaller surge: the payload explains more
    ctx = surge_with_larger_inputs(rate=13.0, size_factor=3.0, slow=1.3)
    ranking = rank(ctx)
    kinds = [c.kind for c in ranking.causes]
    assert kinds[:2] == ["payload_size", "traffic_surge"], ranking.checked
    split = shares(ctx)
    assert split["payload_size"] > split["traffic_surge"] > 0.1


def test_preemptions_per_cpu_second_come_from_the_target_processes_switches() -> None:

    procs = [ProcessPoint("pod", 1, T0, 10, 0.3, 0.1, 10**8, 4, 50, 200),
             ProcessPoint("pod", 2, T0, 10, 0.4, 0.0, 10**8, 4, 10, 120),
             ProcessPoint("pod", 1, T0 + STEP, 10, 0.01, 0.01, 10**8, 4, 0, 3)]
    first, idle = resource_points(procs, [], step_s=10.0)
    assert first.target_preempted_per_cpu_s == 320 / (0.8 * 10)
    assert idle.target_preempted_per_cpu_s is None  # 0.02 cores: a rate over nothing
    assert resource_points(procs, [])[0].target_preempted_per_cpu_s is None  # no step known
