"""The one owner of model state: the scheduler, its slots, placement and restarts, and the
directory of models this host can serve."""
