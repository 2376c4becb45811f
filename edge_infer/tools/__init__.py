"""Developer and one-shot tools: the benchmarks, classify's batch loop and the progress bar."""
