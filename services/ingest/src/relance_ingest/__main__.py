"""`python -m relance_ingest`: run the ingest service alone (what its Docker image runs)."""

from relance_ingest.bootstrap import build, configure_app
from relance_runtime.serve import serve_main

if __name__ == "__main__":
    serve_main("ingest", build, configure_app)
