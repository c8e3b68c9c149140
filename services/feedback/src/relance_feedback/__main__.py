"""`python -m relance_feedback`: run the feedback service alone (what its Docker image runs)."""

from relance_feedback.bootstrap import build, configure_app
from relance_runtime.serve import serve_main

if __name__ == "__main__":
    serve_main("feedback", build, configure_app)
