"""Exceptions the library raises for inputs a user can get wrong."""

from __future__ import annotations

from pipeline.spec import SpecError


class PipelineConfigError(SpecError):
    """A construct prop that cannot work; the message names the prop and what to change."""
