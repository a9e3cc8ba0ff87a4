"""The loss checker: real queues, real worker processes and real faults, and an account of every job id."""
