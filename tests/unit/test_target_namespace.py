"""The heuristic that tells an agent alone in its PID namespace from a plain miss.

Fed process trees as values: {pid: parent pid}, parent 0 where the parent lies outside
the namespace, as /proc shows it inside a container.
"""

from __future__ import annotations

import pytest

from pyrometer.agent.target.namespace import NOT_SHARED, alone_in_pid_namespace


@pytest.mark.parametrize(("me", "parents", "helpers"), [
    (1, {1: 0}, set()),  # the agent is the container's pid 1
    (7, {1: 0, 7: 1}, set()),  # under an init (tini, dumb-init)
    (9, {1: 0, 7: 1, 9: 7}, set()),  # under init and a shell entrypoint
    (7, {1: 0, 7: 1, 12: 7, 13: 7}, {12, 13}),  # with its own py-spy recorders
], ids=["agent-is-pid-1", "under-init", "under-init-and-shell", "with-py-spy"])
def test_alone(me: int, parents: dict[int, int], helpers: set[int]) -> None:
    assert alone_in_pid_namespace(me, parents, helpers)


@pytest.mark.parametrize(("me", "parents"), [
    # Kubernetes, shareProcessNamespace: pause is pid 1, each container's init has parent 0
    (14, {1: 0, 8: 0, 14: 0}),
    # Docker Compose, pid: "service:model": the server's process is pid 1
    (30, {1: 0, 30: 0}),
    # one container, one init, server and agent side by side: a typo in --match is a typo
    (8, {1: 0, 7: 1, 8: 1}),
    # the host's namespace: kthreadd (pid 2) has no parent either
    (900, {1: 0, 2: 0, 3: 2, 500: 1, 900: 500}),
    # /proc mounted with hidepid: pid 1 and the target are hidden, not absent
    (900, {900: 500}),
    # an exec'd shell in the agent's container (parent outside): cannot tell, no hint
    (1, {1: 0, 40: 0}),
    # a process the agent started itself that is not py-spy (a demo's server)
    (1, {1: 0, 5: 1}),
    # a visible process whose parent could not be read
    (7, {1: 0, 7: 1, 8: -1}),
    # the agent's own pid not among the visible ones: a view too odd to judge
    (7, {1: 0}),
], ids=["k8s-shared", "compose-shared", "sibling-in-container", "host", "hidepid",
        "exec-shell", "own-child", "unreadable-parent", "self-not-visible"])
def test_not_alone(me: int, parents: dict[int, int]) -> None:
    assert not alone_in_pid_namespace(me, parents)


def test_a_parent_loop_ends() -> None:
    # pid reuse can make /proc read as a loop for an instant: judge, don't hang
    assert not alone_in_pid_namespace(7, {1: 0, 7: 8, 8: 7})


def test_the_hint_names_both_settings_on_one_line() -> None:
    assert "shareProcessNamespace: true" in NOT_SHARED
    assert 'pid: "service:' in NOT_SHARED
    assert "\n" not in NOT_SHARED
