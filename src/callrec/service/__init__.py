"""The composition root of ``callrec serve``: see :mod:`callrec.service.root`.

Only the command line (and tests that run a whole server) import this package; the front ends
and the engine never do: they are handed what they need.
"""

from callrec.service.root import (
    Service,
    build_engine,
    importing,
    run,
    serve_forever,
    standalone_engine,
)

__all__ = ["Service", "build_engine", "importing", "run", "serve_forever", "standalone_engine"]
