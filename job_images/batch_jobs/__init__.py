"""The five job programs of the array-job pipeline (``python -m batch_jobs.job_a`` ...)."""
