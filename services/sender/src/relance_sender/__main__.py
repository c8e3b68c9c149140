"""`python -m relance_sender`: run the sender service alone (what its Docker image runs)."""

from relance_runtime.serve import serve_main
from relance_sender.bootstrap import build, configure_app

if __name__ == "__main__":
    serve_main("sender", build, configure_app)
