"""AWS Batch, served on this machine by this library's engine, moto-style: models apart from
responses.

- :mod:`.definitions`  compute environments, job queues, job definitions and revisions
- :mod:`.job`          a job, resolved against its definition, described as the API does
- :mod:`.models`       the API's operations and the jobs' state machine
- :mod:`.scheduler`    which jobs start when, and what becomes of their processes
- :mod:`.processes`    starting and stopping job processes
- :mod:`.launcher`     the fork server the Python job processes are forked from
- :mod:`.faults`       failures to inject into attempts
- :mod:`.journal`      the state on disk, appended as it changes
- :mod:`.responses`    the REST-JSON wire protocol
- :mod:`.exceptions`   the errors it answers with
"""
