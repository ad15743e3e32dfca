"""What the tests share: the repository's paths, synthesis helpers, the command line as a
user runs it, AWS Batch (this library's engine, in process) with queues and compute
environments made on it, the job programs' world on moto and IAM policy checks."""
