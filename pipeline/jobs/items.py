"""An object's DynamoDB item: the memory step's attributes beside the pipeline's own (the CPU
step's facts among them, as ``cpu_facts``), typed for DynamoDB on the way in and back to plain
values on the way out."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pipeline import contract

RESERVED = frozenset(
    {
        contract.TABLE_PARTITION_KEY,
        contract.TABLE_SORT_KEY,
        "shard",
        "output_key",
        "output_md5",
        "output_size",
        "cpu_facts",
    }
)
"""The attributes of an object's item that are the pipeline's own, not the step's."""
CPU_FACTS = "cpu_facts"
"""The item's attribute holding what the CPU step returned for the object (a map; left out
when it returned nothing)."""


class ItemError(ValueError):
    """Attributes an item cannot hold; the message says which and why."""


def decimals(value: Any) -> Any:
    """Floats as DynamoDB takes numbers (Decimal), in nested values too."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decimals(v) for v in value]
    return value


def item_of(
    run_id: str,
    shard: int,
    key: str,
    output: Mapping[str, Any],
    attributes: Mapping[str, Any],
    cpu_facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An object's item: the memory step's attributes and the pipeline's own (with the CPU
    step's facts), typed for DynamoDB."""
    from boto3.dynamodb.types import TypeSerializer

    taken = sorted(RESERVED & set(attributes))
    if taken:
        raise ItemError(f"attribute {taken[0]!r} is the pipeline's own; rename it")
    serializer = TypeSerializer()
    try:
        typed = {name: serializer.serialize(decimals(value)) for name, value in attributes.items()}
        if cpu_facts:
            typed[CPU_FACTS] = serializer.serialize(decimals(dict(cpu_facts)))
    except (TypeError, ValueError) as error:
        raise ItemError(f"an attribute DynamoDB cannot hold: {error}") from None
    return {
        **typed,
        contract.TABLE_PARTITION_KEY: {"S": run_id},
        contract.TABLE_SORT_KEY: {"S": key},
        "shard": {"N": str(shard)},
        "output_key": {"S": str(output["output_key"])},
        "output_md5": {"S": str(output["output_md5"])},
        "output_size": {"N": str(output["output_size"])},
    }


def attributes_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The step's attributes of a typed item, as plain values (numbers as Decimal)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {
        name: deserializer.deserialize(value)
        for name, value in item.items()
        if name not in RESERVED
    }


def cpu_facts_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The CPU step's facts an item holds (numbers as Decimal); empty when it holds none."""
    from boto3.dynamodb.types import TypeDeserializer

    held = item.get(CPU_FACTS)
    return dict(TypeDeserializer().deserialize(held)) if held else {}


def plain(value: Any) -> Any:
    """DynamoDB's numbers (Decimal) as Python's: int when whole, else float; in nested values
    too. What a step gets back is what it could have returned."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [plain(v) for v in value]
    return value
