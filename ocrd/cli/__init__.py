"""The ``ocrd`` command (``main``): ``serve`` and the commands around it (``check-config``,
``print-config``, ``default-config``, ``gen-certs``, ``hash-token``)."""
