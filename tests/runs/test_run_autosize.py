"""A run sized to its input: the size chosen for a number of objects, and the listing that
counts them as JobA will."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipeline.batch_facts import MAX_ARRAY_SIZE, MIN_ARRAY_SIZE
from pipeline.document import PipelineDocument
from pipeline.errors import ServiceError
from pipeline.jobs.job_a import Listed, plan_shards
from pipeline.runs.autosize import (
    AUTO,
    InputListing,
    InputLocation,
    choose_size,
    input_location,
    list_input,
)
from pipeline.runs.requests import RunInputs, resolve_run
from pipeline.spec import DEFAULT_SPEC

DOCUMENT = PipelineDocument(
    "ProdQueue",
    {j.key: j.definition_name for j in DEFAULT_SPEC},
    resources={"input_bucket": "bucket-a", "output_bucket": "bucket-out"},
)


@pytest.mark.parametrize(
    ("objects", "per_child", "deployed", "size"),
    [
        (300, 100, MAX_ARRAY_SIZE, 3),  # 100 each
        (299, 100, MAX_ARRAY_SIZE, 2),  # 149 and 150: at least 100 each
        (150, 100, MAX_ARRAY_SIZE, MIN_ARRAY_SIZE),  # AWS Batch's smallest array
        (1, 100, MAX_ARRAY_SIZE, MIN_ARRAY_SIZE),  # one child has nothing: Batch's minimum
        (0, 100, MAX_ARRAY_SIZE, MIN_ARRAY_SIZE),
        (1_500_000, 100, MAX_ARRAY_SIZE, MAX_ARRAY_SIZE),  # 15,000 children of 100: capped
        (20, 1, 8, 8),  # more objects than the deployed size: the deployed size
        (5, 1, 8, 5),  # one object each
    ],
)
def test_the_size_for_a_number_of_objects(
    objects: int, per_child: int, deployed: int, size: int
) -> None:
    choice = choose_size(objects, deployed=deployed, per_child=per_child)
    assert (choice.size, choice.how) == (size, AUTO)


def test_with_at_least_two_objects_no_child_is_without_one() -> None:
    # GIVEN listings of every count from 2 to 400, objects of random sizes (JobA balances
    # bytes, not counts), and targets from 1 to 120 objects per child
    rng = random.Random(36)
    for objects in range(MIN_ARRAY_SIZE, 401):
        listed = [Listed(f"k{n}", rng.randint(1, 10**6), "e") for n in range(objects)]
        per_child = rng.randint(1, 120)
        # WHEN the run is sized to them and JobA plans its shards for that size
        size = choose_size(objects, deployed=MAX_ARRAY_SIZE, per_child=per_child).size
        shards = plan_shards(listed, size)
        # THEN every shard has an object, and every object is in one
        assert all(shards), (objects, per_child, size)
        assert sum(len(s) for s in shards) == objects


def test_the_size_line_says_why() -> None:
    assert choose_size(300, deployed=10_000, per_child=100).describe() == (
        "array size 3: 300 objects, 100 per child on average (auto: a child per 100 objects, "
        "at most 10,000 "
        "deployed)"
    )
    assert choose_size(297, deployed=8, per_child=100).describe() == (
        "array size 2: 297 objects, 148.5 per child on average (auto: a child per 100 objects, "
        "at most 8 deployed)"
    )
    assert choose_size(20, deployed=8, per_child=1).describe() == (
        "array size 8: at least 20 objects (auto: a child per object would make more than the "
        "8 deployed)"
    )
    assert choose_size(1, deployed=8, per_child=100).describe() == (
        "array size 2: 1 object, 0.5 per child on average (auto: fewer than 200 objects, and "
        "AWS Batch's "
        "smallest array is 2)"
    )


def test_the_size_line_says_at_least_only_when_the_input_wants_more_than_the_deployed() -> None:
    # 85 objects at 10 per child want 8 children (85 // 10, not 8.5): the 8 deployed suffice
    assert choose_size(85, deployed=8, per_child=10).describe() == (
        "array size 8: 85 objects, 10.6 per child on average (auto: a child per 10 objects, "
        "at most 8 deployed)"
    )
    # 80 want exactly the 8 deployed
    assert choose_size(80, deployed=8, per_child=10).describe() == (
        "array size 8: 80 objects, 10 per child on average (auto: a child per 10 objects, at "
        "most 8 deployed)"
    )
    # a target of 2 per child is said in objects ("a child per object" is for 1 only)
    assert choose_size(10, deployed=8, per_child=2).describe() == (
        "array size 5: 10 objects, 2 per child on average (auto: a child per 2 objects, at most "
        "8 deployed)"
    )


def test_a_run_given_no_size_is_sized_to_its_listed_input_and_a_size_given_is_exact() -> None:
    sized = resolve_run(DOCUMENT, RunInputs(input_objects=300))
    assert (sized.array_size, sized.size and sized.size.how) == (3, AUTO)
    assert (
        resolve_run(DOCUMENT, RunInputs(input_objects=300, objects_per_child=30)).array_size == 10
    )
    assert resolve_run(DOCUMENT, RunInputs(array_size=50, input_objects=300)).array_size == 50
    # not listed: the deployed size, and so said
    unlisted = resolve_run(DOCUMENT, RunInputs())
    assert unlisted.array_size == 10_000
    assert unlisted.size is not None
    assert unlisted.size.describe() == (
        "array size 10,000: the deployed size (the input was not listed, so not sized to it)"
    )
    # a resume keeps the run's own size, whatever its input now holds
    resumed = resolve_run(DOCUMENT, RunInputs(input_objects=300), previous_size=40)
    assert resumed.array_size == 40


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bucket-a")
        yield client


def test_the_listing_counts_what_joba_will_shard(s3: Any) -> None:
    # GIVEN BucketA with inputs under in/ and everything JobA rejects
    for key, body in {
        "in/a.csv": b"a",
        "in/b.csv": b"bb",
        "in/sub/c.csv": b"ccc",
        "in/empty.csv": b"",
        "in/folder/": b"",
        "in/_READY": b"",
        "in/big.bin": b"x" * 11,
        "other/d.csv": b"dddd",
    }.items():
        s3.put_object(Bucket="bucket-a", Key=key, Body=body)
    s3.put_object(Bucket="bucket-a", Key="in/cold.csv", Body=b"c", StorageClass="GLACIER")
    # WHEN the prefix in/ is listed with a 10-byte limit
    listing = list_input(s3, InputLocation("bucket-a", "in/", 10))
    # THEN the three inputs are counted; the empty, the folder marker, the ready marker,
    # the oversize and the archived objects are JobA's rejects
    assert (listing.objects, listing.rejected, listing.bytes) == (3, 5, 6)
    assert listing.where == "s3://bucket-a/in/"


def test_the_listing_follows_pages(s3: Any) -> None:
    for number in range(1_001):  # past the first page of 1,000
        s3.put_object(Bucket="bucket-a", Key=f"k/{number:05d}", Body=b"1")
    assert list_input(s3, InputLocation("bucket-a", "", 10)).objects == 1_001
    # sizing a run stops once the count is enough to decide (a page at a time)
    stopped = list_input(s3, InputLocation("bucket-a", "", 10), stop_at=1_000)
    assert (stopped.objects, stopped.complete) == (1_000, False)


def test_a_listing_s3_refuses_says_what_to_do(s3: Any) -> None:
    with pytest.raises(ServiceError) as raised:
        list_input(s3, InputLocation("no-such-bucket", "in/", 10))
    assert str(raised.value) == (
        "listing s3://no-such-bucket/in/ to size the run to its input failed (NoSuchBucket: "
        "The specified bucket does not exist): give array_size, or allow s3:ListBucket on the "
        "bucket"
    )


def test_the_input_is_where_the_runs_jobs_will_look() -> None:
    # the run's own prefix and limit, else what its job definitions set, else the defaults
    assert input_location(DOCUMENT, input_prefix="in/", max_object_bytes=5) == InputLocation(
        "bucket-a", "in/", 5
    )
    described = PipelineDocument(
        "ProdQueue",
        {},
        resources={"input_bucket": "bucket-a"},
        definition_settings={"PIPELINE_MAX_OBJECT_BYTES": "1024", "PIPELINE_INPUT_PREFIX": "p/"},
    )
    assert input_location(described, input_prefix=None, max_object_bytes=None) == InputLocation(
        "bucket-a", "p/", 1024
    )
    assert input_location(DOCUMENT, input_prefix=None, max_object_bytes=None) == InputLocation(
        "bucket-a", "", 5 * 1024**3
    )
    # a document that does not name BucketA (a dry run without --stack): nothing to list
    assert (
        input_location(PipelineDocument("q", {}), input_prefix=None, max_object_bytes=None) is None
    )


def test_the_size_as_json_says_the_size_how_and_why() -> None:
    assert choose_size(300, deployed=10_000, per_child=100).as_json() == {
        "arraySize": 3,
        "how": AUTO,
        "deployed": 10_000,
        "objects": 300,
        "objectsPerChild": 100,
        "reason": "array size 3: 300 objects, 100 per child on average (auto: a child per 100 "
        "objects, at most 10,000 deployed)",
    }


def test_the_listing_rejects_markers_by_name_and_reads_keys_url_encoded(s3: Any) -> None:
    # GIVEN objects that are not empty: a folder marker, a ready marker, and two inputs, one
    # of which has "%2F" in its name (not a folder marker: its name does not end in "/")
    for key in ("in/folder/", "in/_READY", "in/odd%2F", "in/a b.csv"):
        s3.put_object(Bucket="bucket-a", Key=key, Body=b"xy")
    # WHEN the prefix is listed
    listing = list_input(s3, InputLocation("bucket-a", "in/", 10))
    # THEN the two markers are rejected by their names, and the two inputs counted
    assert (listing.objects, listing.rejected, listing.bytes) == (2, 2, 4)


def test_an_empty_prefix_lists_nothing(s3: Any) -> None:
    assert list_input(s3, InputLocation("bucket-a", "nothing/", 10)) == InputListing(
        "bucket-a", "nothing/", 0, 0, 0, complete=True
    )


def test_the_first_jobs_own_settings_come_before_the_job_definitions() -> None:
    # GIVEN job definitions that set a prefix and a limit, and a JobA that sets its own
    spec = DEFAULT_SPEC.with_overrides(
        {
            "JobA": {
                "environment": {"PIPELINE_INPUT_PREFIX": "a/", "PIPELINE_MAX_OBJECT_BYTES": "2048"}
            }
        }
    )
    document = PipelineDocument(
        "ProdQueue",
        {},
        spec=spec,
        resources={"input_bucket": "bucket-a"},
        definition_settings={"PIPELINE_MAX_OBJECT_BYTES": "1024", "PIPELINE_INPUT_PREFIX": "p/"},
    )
    # THEN the run processes JobA's prefix with JobA's limit
    assert input_location(document, input_prefix=None, max_object_bytes=None) == InputLocation(
        "bucket-a", "a/", 2048
    )
