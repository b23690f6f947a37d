"""Each process takes its share of the cores for torch's threads (train/cpu_threads.py)."""

from __future__ import annotations

import os

from train.cpu_threads import CORES_VARIABLE, choose_threads, processes_on_host, usable_cores


def test_auto_is_the_share_of_the_cores_less_the_data_workers():
    env = {CORES_VARIABLE: "16"}
    assert choose_threads(0, 4, 2, env).threads == 2  # 16 cores / 4 processes - 2 workers
    assert choose_threads(0, 1, 0, env).threads == 16
    assert choose_threads(0, 8, 4, env).threads == 1  # never below one
    assert choose_threads(0, 4, 2, env).source == f"auto: 16 ${CORES_VARIABLE} / 4 processes - 2 data workers"
    assert choose_threads(0, 1, 0, {}).threads == usable_cores({}) == len(os.sched_getaffinity(0))


def test_an_explicit_count_wins_then_omp_num_threads():
    env = {CORES_VARIABLE: "16", "OMP_NUM_THREADS": "3"}
    assert (choose_threads(5, 4, 2, env).threads, choose_threads(5, 4, 2, env).source) == (5, "set explicitly")
    assert (choose_threads(0, 4, 2, env).threads, choose_threads(0, 4, 2, env).source) == (3, "OMP_NUM_THREADS")
    assert choose_threads(0, 4, 0, {CORES_VARIABLE: "16", "OMP_NUM_THREADS": "junk"}).threads == 4


def test_processes_on_host_come_from_torchrun_when_it_says():
    assert processes_on_host(8, {"LOCAL_WORLD_SIZE": "4"}) == 4  # two nodes of four
    assert processes_on_host(8, {}) == 8


def test_the_local_sweep_gives_runs_that_share_the_machine_a_share_of_the_cores(monkeypatch):
    from launch.commands import child_env

    monkeypatch.setenv(CORES_VARIABLE, "8")
    assert child_env("0", 4)[CORES_VARIABLE] == "2"  # four one-GPU runs at once: two cores each
    monkeypatch.delenv(CORES_VARIABLE)
    assert CORES_VARIABLE not in child_env(None, 1)  # alone on the machine: the run's own count
