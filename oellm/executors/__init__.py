"""Executors run a planned run dir: `slurm` submits job arrays, `local` runs the workers on this machine."""
