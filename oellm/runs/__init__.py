"""A run after it is submitted: its rows' states (`states`, pure), status views (`view`, `report`),
resubmit and cancel. Scheduler answers come through the run's executor."""
