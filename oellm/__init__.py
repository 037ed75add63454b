"""oellm: schedule LLM evaluations on HPC clusters (SLURM job arrays) or the local machine."""

__version__ = "0.1.0"
