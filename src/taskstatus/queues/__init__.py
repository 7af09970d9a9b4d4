"""Queue adapters: each turns its queue's own events into taskstatus lifecycle hooks."""
