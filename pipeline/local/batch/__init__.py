"""AWS Batch, served on this machine by this library's engine, moto-style: models apart from
responses. It stands alone: it imports only :mod:`pipeline.errors` and :mod:`pipeline.batch_facts`,
knows no pipeline, and can be served over HTTP (``python -m pipeline.local serve``) or driven
in-process with a placement and a clock its caller controls (:mod:`.placements`).

- :mod:`.definitions`  compute environments, job queues, job definitions and revisions
- :mod:`.job`          a job, resolved against its definition, described as the API does
- :mod:`.models`       the API's operations and the jobs' state machine
- :mod:`.scheduler`    which jobs start when, and what becomes of their processes
- :mod:`.processes`    starting and stopping job processes
- :mod:`.launcher`     the fork server every job process is forked from
- :mod:`.faults`       failures to inject into attempts
- :mod:`.placements`   placing jobs from the caller's own process (no job processes)
- :mod:`.checks`       what a request is refused for, as AWS Batch refuses it
- :mod:`.listing`      ListJobs' filters
- :mod:`.in_process`   boto3 clients answered by a WSGI application in this process
- :mod:`.journal`      the state on disk, appended as it changes
- :mod:`.responses`    the REST-JSON wire protocol
- :mod:`.exceptions`   the errors it answers with
"""
