"""The `workbench-sql` search backend for the embedded Argilla server.

Importing this package registers the backend with argilla_server's `SearchEngine.register`; the server then uses
it when started with ARGILLA_SEARCH_ENGINE=workbench-sql. It runs inside the server's own venv and imports nothing
from the workbench.
"""

from .engine import ENGINE_NAME, SQLSearchEngine

__all__ = ["ENGINE_NAME", "SQLSearchEngine"]
