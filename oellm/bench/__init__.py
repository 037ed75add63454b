"""Measurement core of `oellm bench`: latency, throughput and energy of one loaded model.

A plain library with no knowledge of SLURM or run dirs; importing it imports no torch.
"""
