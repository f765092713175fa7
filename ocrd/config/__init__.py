"""One typed settings object (``settings``) and its parts: durations and sizes, the remote control
plane's settings (``remote``), static upstreams (``upstreams``). It imports no transport."""
