"""The worker: what one array task runs (`oellm worker`, `task.run`), on a compute node or a local slot."""
