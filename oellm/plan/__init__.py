"""Planning: a request -> validated rows (`request`, `expand`) -> array tasks and submissions (`packing`)."""
