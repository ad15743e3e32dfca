"""pipeline/runs/requests.py: a run's five SubmitJob requests, and the rules that pick a run's
inputs. Pure functions: no AWS call, so each test builds the requests and reads them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline import contract
from pipeline.document import PipelineDocument
from pipeline.errors import SpecError
from pipeline.runs.requests import (
    RunInputs,
    build_request,
    dry_run_requests,
    new_run_id,
    placeholder_id,
    resolve_run,
    run_config,
)
from pipeline.spec import DEFAULT_SPEC, PIPELINE_TAG, RUN_TAG, STARTED_BY_TAG
from pipeline.steps import DEFAULT_STEPS, PipelineSteps, Step

DOCUMENT = PipelineDocument(
    queue="arn:aws:batch:us-east-1:111122223333:job-queue/dev-ProdQueue",
    job_definitions={j.key: f"def-{j.key}:3" for j in DEFAULT_SPEC},
    queue_name="dev-ProdQueue",
    resources={"input_bucket": "bucket-a", "output_bucket": "bucket-out"},
    parameters={"JobE": {"Recipient": "team@example.com"}},
)
IDS = {j.key: f"id-{j.key}" for j in DEFAULT_SPEC}


def requests_of(
    config: Any, reruns: dict[str, list[int]] | None = None
) -> dict[str, dict[str, Any]]:
    return {
        job.key: dict(build_request(job, DOCUMENT, config, IDS, reruns=reruns))
        for job in config.spec
    }


def environment(request: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}


# --- the five requests ----------------------------------------------------------------------


def test_each_job_is_submitted_to_the_deployed_queue_and_definition() -> None:
    requests = requests_of(run_config(array_size=4, run_id="r1"))
    for key, request in requests.items():
        assert request["jobName"] == key
        assert request["jobQueue"] == DOCUMENT.queue
        assert request["jobDefinition"] == f"def-{key}:3"
        assert request["containerOverrides"]["resourceRequirements"] == (
            DEFAULT_SPEC.job(key).resource_requirements()
        )


def test_the_arrays_have_the_runs_size_and_the_checks_ten_children() -> None:
    requests = requests_of(run_config(array_size=4, run_id="r1"))
    sizes = {key: r.get("arrayProperties", {}).get("size") for key, r in requests.items()}
    assert sizes == {"JobA": None, "JobB": 4, "JobC": 4, "JobD": 10, "JobE": None}


def test_each_job_waits_as_the_workflow_says() -> None:
    requests = requests_of(run_config(array_size=4, run_id="r1"))
    depends = {key: r.get("dependsOn") for key, r in requests.items()}
    assert depends == {
        "JobA": None,
        "JobB": [{"jobId": "id-JobA"}],
        "JobC": [{"jobId": "id-JobB", "type": "N_TO_N"}],
        "JobD": [{"jobId": "id-JobC"}, {"type": "SEQUENTIAL"}],
        "JobE": [{"jobId": "id-JobD"}],
    }


def test_every_job_carries_the_run_and_the_resources_and_tags_its_children() -> None:
    # GIVEN a run with job settings of its own and a tag of a triggered run
    config = replace(
        run_config(array_size=4, run_id="r1"),
        environment={contract.MAX_OBJECT_BYTES: "1024"},
        tags={STARTED_BY_TAG: "schedule"},
    )
    for request in requests_of(config).values():
        # THEN each job gets the run id, the array size, the resources and the settings
        assert environment(request) == {
            contract.RUN_ID: "r1",
            contract.ARRAY_SIZE: "4",
            contract.INPUT_BUCKET: "bucket-a",
            contract.OUTPUT_BUCKET: "bucket-out",
            contract.MAX_OBJECT_BYTES: "1024",
        }
        # AND tags its children with the run and the pipeline (the queue's name)
        assert request["tags"] == {
            STARTED_BY_TAG: "schedule",
            RUN_TAG: "r1",
            PIPELINE_TAG: "dev-ProdQueue",
        }
        assert request["propagateTags"] is True


def test_the_pipeline_tag_is_the_queue_when_its_name_is_not_known() -> None:
    document = PipelineDocument(queue="ProdQueue", job_definitions=DOCUMENT.job_definitions)
    config = run_config(array_size=4, run_id="r1")
    request = build_request(DEFAULT_SPEC.job("JobA"), document, config, IDS)
    assert request["tags"][PIPELINE_TAG] == "ProdQueue"


def test_only_jobe_gets_parameters_and_only_those_given() -> None:
    given = requests_of(run_config(array_size=4, run_id="r1", recipient="me@example.com"))
    assert given["JobE"]["parameters"] == {"Recipient": "me@example.com"}
    assert all("parameters" not in r for key, r in given.items() if key != "JobE")
    none = requests_of(run_config(array_size=4, run_id="r1"))
    assert "parameters" not in none["JobE"]


def test_a_dry_run_shows_the_workflows_placeholders_for_the_ids() -> None:
    requests = dry_run_requests(DOCUMENT, run_config(array_size=4, run_id="r1"))
    assert [r["jobName"] for r in requests] == ["JobA", "JobB", "JobC", "JobD", "JobE"]
    assert requests[1]["dependsOn"] == [{"jobId": "JobA_job_ID"}]
    assert requests[4]["dependsOn"] == [{"jobId": placeholder_id("JobD")}]


# --- re-running failed children -------------------------------------------------------------


def test_a_rerun_of_some_children_is_an_array_of_them_told_their_indices() -> None:
    # GIVEN JobB and JobC re-run for children 3 and 7 of a 10-child run
    config = run_config(array_size=10, run_id="r1")
    requests = requests_of(config, reruns={"JobB": [3, 7], "JobC": [3, 7]})
    # THEN each is an array of two children told their original indices
    for key in ("JobB", "JobC"):
        assert requests[key]["arrayProperties"] == {"size": 2}
        assert environment(requests[key])[contract.INDEX_MAP] == "3,7"
    # AND child i of JobC still waits for child i of JobB (same indices, same order)
    assert requests["JobC"]["dependsOn"] == [{"jobId": "id-JobB", "type": "N_TO_N"}]
    # AND the jobs run whole keep their size and get no index map
    assert requests["JobD"]["arrayProperties"] == {"size": 10}
    assert contract.INDEX_MAP not in environment(requests["JobD"])


def test_a_rerun_with_other_indices_than_its_dependency_waits_for_the_whole_job() -> None:
    config = run_config(array_size=10, run_id="r1")
    # GIVEN JobC re-run for children JobB does not re-run, or JobB run whole
    other = requests_of(config, reruns={"JobB": [3], "JobC": [3, 7]})
    whole = requests_of(config, reruns={"JobC": [3, 7]})
    # THEN JobC waits for the whole JobB (no N_TO_N)
    assert other["JobC"]["dependsOn"] == [{"jobId": "id-JobB"}]
    assert whole["JobC"]["dependsOn"] == [{"jobId": "id-JobB"}]


def test_a_rerun_of_one_child_is_a_standard_job() -> None:
    # GIVEN JobB, JobC and JobD each re-run for a single child
    config = run_config(array_size=10, run_id="r1")
    requests = requests_of(config, reruns={"JobB": [4], "JobC": [4], "JobD": [9]})
    # THEN none is an array: no size, no N_TO_N, no SEQUENTIAL (which needs an array)
    for key in ("JobB", "JobC", "JobD"):
        assert "arrayProperties" not in requests[key]
    assert requests["JobC"]["dependsOn"] == [{"jobId": "id-JobB"}]
    assert requests["JobD"]["dependsOn"] == [{"jobId": "id-JobC"}]
    assert environment(requests["JobD"])[contract.INDEX_MAP] == "9"


# --- a run's inputs -------------------------------------------------------------------------


def test_a_new_run_id_sorts_by_time_and_is_unique() -> None:
    at = datetime(2026, 11, 25, 18, 30, 0, tzinfo=UTC)
    first, second = new_run_id(at), new_run_id(at)
    assert re.fullmatch(r"20261125T183000-[0-9a-f]{6}", first)
    assert first != second
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", new_run_id())


def test_run_config_takes_the_given_values() -> None:
    config = run_config(
        array_size=6, run_id="nightly-1", source_bucket="s3://mine", recipient="a@example.com"
    )
    assert config.run_id == "nightly-1"
    assert config.array_size == 6
    assert config.spec.job("JobC").array_size == 6
    assert dict(config.parameters) == {"SourceBucket": "s3://mine", "Recipient": "a@example.com"}
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", run_config(array_size=2).run_id)


@pytest.mark.parametrize("run_id", ["a", "0-b", "A" * 63])
def test_run_ids_batch_tags_accept(run_id: str) -> None:
    assert RunInputs(run_id=run_id).checked().run_id == run_id


@pytest.mark.parametrize("run_id", ["", "-a", "a_b", "a b", "a" * 64, "a\n"])
def test_run_ids_that_would_break_names_and_tags_are_refused(run_id: str) -> None:
    with pytest.raises(SpecError, match=r"run_id .* must be 1-63 letters, digits or '-'") as error:
        RunInputs(run_id=run_id).checked()
    assert error.value.field == "run_id"


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        (RunInputs(array_size=1), "array_size"),
        (RunInputs(source_bucket="my-bucket"), "source_bucket"),
        (RunInputs(source_bucket="s3://b/prefix"), "source_bucket"),
        (RunInputs(recipient="nobody"), "recipient"),
        (RunInputs(max_object_bytes=0), "max_object_bytes"),
        (RunInputs(max_object_bytes=True), "max_object_bytes"),
        (RunInputs(max_object_bytes=2.5), "max_object_bytes"),  # type: ignore[arg-type]
        (RunInputs(input_prefix="incoming/_READY"), "input_prefix"),
        (RunInputs(input_prefix="p" * 1025), "input_prefix"),
    ],
)
def test_each_input_a_job_would_refuse_is_refused_naming_its_field(
    inputs: RunInputs, field: str
) -> None:
    with pytest.raises(SpecError) as error:
        inputs.checked()
    assert error.value.field == field
    assert str(error.value).startswith(field)


def test_inputs_at_their_limits_are_accepted() -> None:
    inputs = RunInputs(
        array_size=2,
        source_bucket="s3://bucket-out",
        recipient="a@example.com",
        max_object_bytes=1,
        input_prefix="incoming/",
    )
    assert inputs.checked() == inputs
    assert inputs.with_run_id("r9").run_id == "r9"


def test_a_run_takes_what_is_given_then_the_earlier_attempts_then_the_deployed() -> None:
    # GIVEN nothing but a recipient, an earlier attempt's size, bucket and settings
    config = resolve_run(
        DOCUMENT,
        RunInputs(recipient="given@example.com"),
        previous_size=6,
        previous_parameters={"SourceBucket": "s3://earlier", "Recipient": "old@example.com"},
        previous_environment={
            contract.MAX_OBJECT_BYTES: "99",
            contract.INPUT_PREFIX: "",
            "OTHER": "x",
        },
    )
    # THEN the given recipient wins, the rest is the earlier attempt's
    assert config.array_size == 6
    assert dict(config.parameters) == {
        "SourceBucket": "s3://earlier",
        "Recipient": "given@example.com",
    }
    # AND of its environment only the run settings it had are kept
    assert dict(config.environment) == {contract.MAX_OBJECT_BYTES: "99"}


def test_a_first_run_takes_the_deployed_defaults() -> None:
    # GIVEN no inputs and no earlier attempt
    config = resolve_run(DOCUMENT, RunInputs(run_id="r1"))
    # THEN the deployed array size, JobE's recipient, and the output bucket as SourceBucket
    assert config.run_id == "r1"
    assert config.array_size == DOCUMENT.spec.array_size
    assert dict(config.parameters) == {
        "SourceBucket": "s3://bucket-out",
        "Recipient": "team@example.com",
    }
    assert dict(config.environment) == {}


def test_a_deployed_source_bucket_default_is_kept() -> None:
    document = PipelineDocument(
        queue="q",
        job_definitions=DOCUMENT.job_definitions,
        resources={"output_bucket": "bucket-out"},
        parameters={"JobE": {"SourceBucket": "s3://deployed"}},
    )
    config = resolve_run(document, RunInputs(array_size=2))
    assert dict(config.parameters) == {"SourceBucket": "s3://deployed"}


def test_a_run_given_settings_sets_them_over_the_earlier_attempts() -> None:
    config = resolve_run(
        DOCUMENT,
        RunInputs(array_size=3, max_object_bytes=2048, input_prefix="incoming/a/"),
        previous_size=6,
        previous_environment={contract.MAX_OBJECT_BYTES: "99", contract.INPUT_PREFIX: "old/"},
    )
    assert config.array_size == 3
    assert dict(config.environment) == {
        contract.MAX_OBJECT_BYTES: "2048",
        contract.INPUT_PREFIX: "incoming/a/",
    }


def test_a_bad_input_is_refused_even_when_an_earlier_attempt_decides() -> None:
    with pytest.raises(SpecError) as error:
        resolve_run(DOCUMENT, RunInputs(max_object_bytes=0), previous_size=6)
    assert error.value.field == "max_object_bytes"


def test_steps_other_than_the_deployed_are_refused_and_the_deployed_accepted() -> None:
    other = PipelineSteps(
        cpu=Step.command("gzip -c {input} > {output}"), memory=DEFAULT_STEPS.memory
    )
    with pytest.raises(
        SpecError, match=r"^--steps name other steps than .* or deploy them$"
    ) as error:
        resolve_run(DOCUMENT, RunInputs(steps=other))
    assert error.value.field == "steps"
    assert resolve_run(DOCUMENT, RunInputs(steps=DEFAULT_STEPS)).spec.steps == DEFAULT_STEPS


def test_run_config_refuses_a_run_id_batch_would_not_take() -> None:
    with pytest.raises(SpecError) as error:
        run_config(array_size=2, run_id="-starts-with-a-dash")
    assert error.value.field == "run_id"
    assert str(error.value) == (
        "run_id '-starts-with-a-dash' must be 1-63 letters, digits or '-', starting with a "
        "letter or digit"
    )


def test_a_run_runs_the_deployed_jobs_and_the_source_bucket_given() -> None:
    # GIVEN a pipeline deployed with JobB on 16 vCPUs
    document = replace(DOCUMENT, spec=DEFAULT_SPEC.with_overrides({"JobB": {"vcpus": 16}}))
    # WHEN a run gives its own SourceBucket
    config = resolve_run(document, RunInputs(source_bucket="s3://given"))
    # THEN the run's JobB is the deployed one, and the given bucket wins over the default
    assert config.spec.job("JobB").vcpus == 16
    assert config.parameters["SourceBucket"] == "s3://given"
