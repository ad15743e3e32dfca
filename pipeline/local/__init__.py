"""The local backend: the whole pipeline on this machine, with no AWS account.

- :mod:`.batch`      LocalBatch: AWS Batch's scheduling semantics, boto3's Batch shapes
- :mod:`.services`   the embedded AWS services (moto's server) and the local resources
- :mod:`.sample`     the generated sample and ``--input DIR``
- :mod:`.saved`      failed local runs kept for ``status``/``resume --local``
- :mod:`.backend`    the local document and sessions handed to the run engine

It needs moto (the ``local`` extra); nothing outside this package imports it at module level.
"""

from pipeline.local.batch import Fault, LocalBatch, LocalJobDefinition

__all__ = ["Fault", "LocalBatch", "LocalJobDefinition"]
