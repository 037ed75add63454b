"""Following a training run (`schedule-eval --follow`): each new checkpoint is evaluated once, when complete.

- state.py   the follower's dir under the output root (`follow-<stamp>/follow.state`) and its time flags;
- look.py    one look: which checkpoints are new and complete, then the ordinary schedule() path;
- loop.py    where the looks run: in the foreground here, or as a SLURM job that resubmits itself;
             status and cancel of a follower.

The follower sits above `oellm.schedule` (it calls it) and below the CLI.
"""
