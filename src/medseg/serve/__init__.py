"""`medseg serve`: an HTTP API and a browser viewer over trained runs (FastAPI + uvicorn,
niivue). Re-exports only; FastAPI and uvicorn are this package's own optional dependencies."""
from .app import create_app
from .server import run_server
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run_server"]
