"""The segmentation service's exception root."""

from relance_runtime.errors import PermanentError, RelanceError


class SegmentationError(RelanceError):
    """Root of every error raised by `relance_segmentation`."""


class OrderFileError(SegmentationError, PermanentError):
    """An orders file that cannot be read as the declared format."""
