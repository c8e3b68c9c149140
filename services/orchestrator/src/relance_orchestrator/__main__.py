"""`python -m relance_orchestrator`: run this service alone (what its Docker image runs)."""

from relance_orchestrator.bootstrap import build, configure_app
from relance_runtime.serve import serve_main

if __name__ == "__main__":
    serve_main("orchestrator", build, configure_app)
