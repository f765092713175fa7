"""ocrd as one node of many behind an OpenAI-aware router (docs/scale-out.md).

Glue, not a router: ocrd tells the router which models this node serves and takes its own URLs
back; which node answers a request is the router's choice alone.

* ``urls``: the URL each model is registered at, and ``ClusterPaths``, which serves those URLs;
* ``router_api``: vllm-router's worker API (list, add, remove);
* ``registrar``: the task that keeps this node's models registered (``[cluster]`` settings).

The load the router may pick by is exported on ``/metrics`` (``ocrd.metrics``).
"""
