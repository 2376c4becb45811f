"""The stages of the daemon and what flows between them: jobs, the tensor pool, preprocessing workers,
the batching inference threads and the writer that commits results and acknowledges inputs."""
