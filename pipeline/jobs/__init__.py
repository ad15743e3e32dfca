"""The five job programs of the array-job pipeline, ``python -m pipeline.jobs.job_a`` to
``job_e``: what runs inside the job containers (and, with ``--local``, as local processes).

They need only this package and boto3; nothing here imports aws-cdk-lib.
"""
