"""A local run's input before its services start: what a dry run with ``--local`` sizes the
run to. The services seed BucketA with these objects (the generated sample, or the files
under ``--input``), so counting them here as JobA will count them (the same rule:
:func:`pipeline.contract.rejection`, with the local size limit) counts what the run will
list, without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.document import PipelineDocument
    from pipeline.runs.autosize import InputListing
    from pipeline.runs.requests import RunInputs


class InputFolder(Protocol):
    @property
    def input_dir(self) -> Path | None:
        """The run's input files (None: the generated sample)."""
        ...


class WithInputFolder(Protocol):
    @property
    def options(self) -> InputFolder: ...


class LocalInputs:
    """What :class:`pipeline.backends.local.LocalBackend` knows of a run's input before
    starting its services."""

    def dry_run_listing(
        self: WithInputFolder, document: PipelineDocument, inputs: RunInputs
    ) -> InputListing:
        """The files BucketA would be seeded with, under the run's prefix, counted as JobA
        will count their objects."""
        from pipeline.contract import rejection
        from pipeline.local.deployment import LOCAL_MAX_OBJECT_BYTES
        from pipeline.local.sample import read_input_dir, sample_objects
        from pipeline.runs.autosize import InputListing

        folder = self.options.input_dir
        objects = read_input_dir(folder)[0] if folder is not None else sample_objects()
        limit = inputs.max_object_bytes or LOCAL_MAX_OBJECT_BYTES
        prefix = inputs.input_prefix or ""
        chosen = {key: len(body) for key, body in objects.items() if key.startswith(prefix)}
        valid = {k: n for k, n in chosen.items() if rejection(k, n, "STANDARD", limit) is None}
        bucket = document.resources.get("input_bucket", "BucketA")
        return InputListing(
            bucket, prefix, len(valid), len(chosen) - len(valid), sum(valid.values())
        )
