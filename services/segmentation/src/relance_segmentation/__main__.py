"""`python -m relance_segmentation`: run this service alone (what its Docker image runs)."""

from relance_runtime.serve import serve_main
from relance_segmentation.bootstrap import build, configure_app

if __name__ == "__main__":
    serve_main("segmentation", build, configure_app)
