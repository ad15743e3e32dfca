"""The local services: AWS Batch served by this library's engine, and S3, DynamoDB, SNS, SQS,
CloudWatch Logs and EventBridge served by moto, on one loopback endpoint that any AWS client
talks to unchanged (``python -m pipeline.local serve``).

- :mod:`.batch`       AWS Batch: the API, the jobs' state machine, scheduling, processes
- :mod:`.server`      the HTTP endpoint, the request dispatcher, the S3/DynamoDB journal
- :mod:`.services`    the services assembled, with their state folder
- :mod:`.deployment`  the pipeline as the local services deploy it, and what it hands the engine
- :mod:`.run_folder`  a local run's folder: the one module that names its files
- :mod:`.services_process` the services as a child process of a command, started and watched
- :mod:`.sample`      the generated sample and ``--input DIR``
- :mod:`.moto_app`    the one module that names moto's own modules
- :mod:`.warm_up`     what the engine's fork server loads and rehearses for the pipeline's jobs

It needs moto (the ``[local]`` extra) only in the process that serves; nothing imports it at
module level.
"""
