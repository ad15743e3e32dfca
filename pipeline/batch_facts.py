"""AWS Batch's own facts, in one place: job states, the status reasons Batch writes, its
limits, how a retry strategy's ``evaluateOnExit`` rules match an attempt, and the variables
Batch sets in a job's container.

These are the service's behaviour, not this pipeline's choices: the AWS Batch User Guide
("Job states", "Array jobs", "Job dependencies", "Automated job retries", "AWS Batch job
environment variables") and the API Reference (SubmitJob, ListJobs, DescribeJobs,
RetryStrategy, EvaluateOnExit) are their source. The local engine, the run engine, the spec
and the job programs read them from here; nothing restates them. Plain data and pure
functions; imports nothing of the library's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# --- job states ---------------------------------------------------------------------------------

STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
"""A job's states, in the order a job moves through them."""
TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
"""The states a job never leaves."""
STARTED = frozenset({"STARTING", "RUNNING"})
"""The states of a job placed on an instance: CancelJob leaves these running, TerminateJob
stops them."""

# --- status reasons -----------------------------------------------------------------------------

DEPENDENCY_FAILED = "Dependent Job failed"
"""The status reason of a job that never ran because a job it depends on failed."""
ARRAY_CHILD_FAILED = "Array Child Job failed"
"""The status reason of an array parent whose children ran and one of them failed."""
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
"""The status reason of an attempt stopped at ``attemptDurationSeconds``; Batch never retries
such an attempt."""
ESSENTIAL_CONTAINER_EXITED = "Essential container in task exited"
"""The status reason of an attempt whose container exited (with any exit code)."""
OUT_OF_MEMORY = "OutOfMemoryError: Container killed due to memory usage"
"""The status reason of an attempt killed for using more memory than it asked for; its exit
code is 137 (SIGKILL)."""
OUT_OF_MEMORY_EXIT_CODE = 137
CANNOT_START_CONTAINER = "CannotStartContainerError"
"""The reason prefix of a container that could not be started."""
CANNOT_PULL_CONTAINER = "CannotPullContainerError"
"""The reason prefix of an image that could not be pulled (a fresh instance, a registry
that did not answer)."""
HOST_TERMINATED_PATTERN = "Host EC2*"
"""How a retry rule names an attempt lost with its instance (a Spot reclaim)."""


def host_terminated(instance_id: str) -> str:
    """The status reason of an attempt lost with its instance."""
    return f"Host EC2 (instance {instance_id}) terminated."


# --- limits -------------------------------------------------------------------------------------

MIN_ARRAY_SIZE = 2
"""Smallest array size SubmitJob accepts (a size of 1 is refused)."""
MAX_ARRAY_SIZE = 10_000
"""Largest array size SubmitJob accepts."""
MAX_DEPENDENCIES = 20
"""Most ``dependsOn`` entries one job may have."""
MAX_EVALUATE_ON_EXIT = 5
"""Most ``retryStrategy.evaluateOnExit`` entries a job definition or SubmitJob may give."""
MIN_TIMEOUT_SECONDS = 60
"""Smallest ``timeout.attemptDurationSeconds``."""
MIN_ATTEMPTS = 1
MAX_ATTEMPTS = 10
"""The range of ``retryStrategy.attempts``."""
DESCRIBE_JOBS_LIMIT = 100
"""Most job IDs one DescribeJobs call takes."""
LIST_JOBS_LIMIT = 1000
"""Most jobs one ListJobs page holds when it lists by status."""
LIST_JOBS_FILTERED_LIMIT = 100
"""Most jobs one ListJobs page holds when it lists by ``filters``."""
MAX_COMPUTE_ENVIRONMENTS_PER_QUEUE = 3
"""Most compute environments a job queue may order."""
SUBMIT_JOB_TPS = 50
"""About how many SubmitJob calls per second an account is allowed."""

# --- compute environments -----------------------------------------------------------------------

SERVICE_LINKED_ROLE = "AWSServiceRoleForBatch"
"""The role a compute environment created without a ``serviceRole`` uses
(CreateComputeEnvironment ``serviceRole``), on the path below."""
SERVICE_LINKED_ROLE_PATH = "/aws-service-role/batch.amazonaws.com/"
DEFAULT_ALLOCATION_STRATEGY = "BEST_FIT"
"""An EC2 or SPOT environment's allocation strategy when none is given (ComputeResource
``allocationStrategy``). Infrastructure updates are not supported for it."""
SCALING_UPDATES = frozenset({"minvCpus", "maxvCpus", "desiredvCpus"})
"""The ``computeResources`` an UpdateComputeEnvironment changes without replacing instances
(a scaling update); changing any other is an infrastructure update, which needs the
service-linked role and an allocation strategy other than BEST_FIT ("Perform infrastructure
updates", AWS Batch User Guide)."""
FARGATE_UPDATES = SCALING_UPDATES | {"securityGroupIds", "subnets"}
"""What UpdateComputeEnvironment may change of a Fargate environment's ``computeResources``
("Updating compute environments", AWS Batch User Guide)."""

# --- dependencies -------------------------------------------------------------------------------


class DependencyType(StrEnum):
    """How a job waits for another (``dependsOn[].type`` in SubmitJob)."""

    STANDARD = "STANDARD"
    """Wait for the whole job, every array child included (no ``type`` in the request)."""
    N_TO_N = "N_TO_N"
    """Child *i* waits for child *i* of the other array job; both arrays have the same size."""
    SEQUENTIAL = "SEQUENTIAL"
    """Child *k* waits for child *k-1* of the same array job; names no other job."""


# --- retry rules --------------------------------------------------------------------------------


def pattern_matches(pattern: str, value: str) -> bool:
    """Batch's patterns (``evaluateOnExit``, ListJobs' name filters): the whole value, or a
    prefix when the pattern ends in '*'."""
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


@dataclass(frozen=True)
class RetryRule:
    """One ``retryStrategy.evaluateOnExit`` entry. A pattern is matched whole, or as a prefix
    when it ends in '*'; a field the attempt does not have (no exit code after a lost host)
    matches nothing."""

    action: str
    """RETRY or EXIT."""
    on_status_reason: str | None = None
    on_reason: str | None = None
    on_exit_code: str | None = None

    def matches(
        self, *, status_reason: str | None, reason: str | None, exit_code: int | None
    ) -> bool:
        checks = (
            (self.on_status_reason, status_reason),
            (self.on_reason, reason),
            (self.on_exit_code, None if exit_code is None else str(exit_code)),
        )
        return all(
            pattern is None or (value is not None and pattern_matches(pattern, value))
            for pattern, value in checks
        )

    def as_evaluate_on_exit(self) -> dict[str, str]:
        """The rule as RegisterJobDefinition takes it (``retryStrategy.evaluateOnExit[]``)."""
        entry = {"action": self.action}
        for key, value in (
            ("onStatusReason", self.on_status_reason),
            ("onReason", self.on_reason),
            ("onExitCode", self.on_exit_code),
        ):
            if value is not None:
                entry[key] = value
        return entry


def retry_action(
    rules: tuple[RetryRule, ...],
    *,
    status_reason: str | None,
    reason: str | None = None,
    exit_code: int | None,
) -> str:
    """What Batch does after a failed attempt that has attempts left: the action of the first
    rule that matches, or RETRY when none matches."""
    for rule in rules:
        if rule.matches(status_reason=status_reason, reason=reason, exit_code=exit_code):
            return rule.action
    return "RETRY"


# --- the variables Batch sets in a job ----------------------------------------------------------

RESERVED_VARIABLE_PREFIX = "AWS_BATCH_"
"""Batch sets these; a job definition or an override may not."""
JOB_ID_VARIABLE = "AWS_BATCH_JOB_ID"
JOB_ATTEMPT_VARIABLE = "AWS_BATCH_JOB_ATTEMPT"
"""The attempt number, from 1."""
ARRAY_INDEX_VARIABLE = "AWS_BATCH_JOB_ARRAY_INDEX"
"""Set in array children only, from 0."""
ARRAY_SIZE_VARIABLE = "AWS_BATCH_JOB_ARRAY_SIZE"
"""Set in array children only: the parent's size."""
QUEUE_NAME_VARIABLE = "AWS_BATCH_JQ_NAME"
COMPUTE_ENVIRONMENT_VARIABLE = "AWS_BATCH_CE_NAME"
