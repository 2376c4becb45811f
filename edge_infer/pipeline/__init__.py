"""The stages of the daemon and what flows between them: jobs, records, the shared state, the tensor
pool, preprocessing workers and the batching inference threads (the writer is ``commit/``)."""
