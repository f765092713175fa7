"""The one owner of model state: the scheduler, its slots, placement and restarts, the directory
of models this host can serve, the engine table (``engines``) and a model's resolved wishes
(``wishes``)."""
