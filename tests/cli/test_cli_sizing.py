"""How a run's array jobs fit the queue: children at once, waves, worst case in time."""

from __future__ import annotations

from dataclasses import replace

from helpers.batch import STACK, cli_in_process, engine_batch
from pipeline.instances import INSTANCE_TYPES
from pipeline.runs.sizing import Capacity, Environment, default_capacity, sizing
from pipeline.spec import DEFAULT_SPEC
from pipeline.steps import DEFAULT_STEPS, Step


def test_an_environment_fits_what_its_best_instance_type_holds() -> None:
    c6i = INSTANCE_TYPES["c6i.16xlarge"]  # 64 vCPU, 128 GiB (about 115 GiB usable)
    environment = Environment("cpu", 256, (c6i,))
    assert environment.at_once(32, 4096) == 8  # 4 instances, 2 children each (vCPU-bound)
    assert environment.at_once(1, 32768) == 12  # 4 instances, 3 each (memory-bound)
    assert environment.at_once(128, 1024) == 0  # no instance has 128 vCPUs
    assert Environment("any", 256).at_once(32, 4096) == 8  # types unknown: maxvCpus alone


def test_the_default_queue_sizes_the_workflow() -> None:
    sized = {s.key: s for s in sizing(DEFAULT_SPEC, default_capacity())}
    assert set(sized) == {"JobB", "JobC", "JobD"}
    # JobB: 8 r6i.8xlarge (1 child each) + 4 c6i.16xlarge (2 each) = 16 at once
    assert (sized["JobB"].at_once, sized["JobB"].waves) == (16, 625)
    assert sized["JobB"].worst_hours == 625 * 2 * 3
    # JobC: 8 x 7 (r6i.8xlarge by memory) + 4 x 3 (c6i.16xlarge) = 68 at once
    assert (sized["JobC"].at_once, sized["JobC"].waves) == (68, 148)
    # JobD's children are SEQUENTIAL: one at a time
    assert (sized["JobD"].at_once, sized["JobD"].waves) == (1, 10)


def test_a_steps_resources_change_the_waves() -> None:
    steps = replace(DEFAULT_STEPS, cpu=Step.python(str(DEFAULT_STEPS.cpu.target), vcpus=4))
    sized = {s.key: s for s in sizing(DEFAULT_SPEC.with_steps(steps), default_capacity())}
    assert sized["JobB"].at_once == 8 * 8 + 4 * 16


def test_this_machine_runs_what_its_cores_hold() -> None:
    machine = Capacity("this machine", cores=2)
    assert machine.at_once(32, 4096) == 1  # a job takes at most every core
    assert machine.at_once(0.5, 1024) == 2
    assert sizing(DEFAULT_SPEC, Capacity("nothing known")) == []


def test_the_dry_run_shows_the_deployed_queues_sizing() -> None:
    with engine_batch() as aws:
        # (the stack's own queue is on an unmanaged environment: nothing to size against)
        code, _, err = cli_in_process(aws, "--stack", STACK, "--dry-run")
        assert code == 0, err
        assert "capacity unknown (ProdQueue's compute environments)" in err
        # a managed environment of c6i.16xlarge (maxvCpus 64): one instance, two JobB children
        aws.managed_queue("c6i.16xlarge")
        code, _, err = cli_in_process(
            aws, "--stack", STACK, "--queue", "Managed", "--dry-run", "--array-size", "100"
        )
    assert code == 0, err
    assert "steps: cpu pipeline.jobs.default_steps:digest_and_compress" in err
    assert "capacity (Managed's compute environments):" in err
    assert "  JobB: 100 children, at most 2 at once -> 50 waves; worst case 50 x 2 h" in err
    assert "  JobD: 10 children, at most 1 at once -> 10 waves" in err
