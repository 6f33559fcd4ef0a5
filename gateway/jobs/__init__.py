"""Asynchronous jobs and batches: what a job asks and answers (work), where callers submit and follow
them (desk), and the runner that claims them from the store and generates through the gateway."""
