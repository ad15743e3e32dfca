"""The run engine: requests, the chain and its reconciliation, watching, failures, resume,
pre-flight and the cost guard, over any backend with boto3's Batch shapes.

It never imports the CLI (``pipeline.submit``), the constructs or the local backend; the
data it runs on comes from ``pipeline.spec`` and ``pipeline.document``.

- :mod:`.api`         the typed Batch protocol (the seam to a backend)
- :mod:`.requests`    the five SubmitJob requests; run inputs and their precedence
- :mod:`.chain`       submit the chain safely (lost responses reconciled); stop it
- :mod:`.progress`    describe a run's jobs; find a run by its tag
- :mod:`.watch`       follow a run to its end
- :mod:`.failures`    first failure; grouped failure report; log excerpts
- :mod:`.resume`      what a resume keeps and re-runs
- :mod:`.preflight`   worst-case cost; fit of every job on the queue's instance types
- :mod:`.discovery`   the deployed pipeline from a stack's document or the job definitions
- :mod:`.engine`      every command as one code path over a backend session
"""
