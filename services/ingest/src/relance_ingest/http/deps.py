"""What the HTTP layer of ingest needs, wired once by the composition root."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from relance_ingest.domain.rate_limit import RateLimiter
from relance_ingest.services import IngestService, TrackingService
from relance_ingest.settings import IngestSettings
from relance_runtime.auth import KeyStore
from relance_runtime.clock import Clock


@dataclass(frozen=True, slots=True)
class IngestDeps:
    ingest: IngestService
    tracking: TrackingService
    keys: KeyStore
    limiter: RateLimiter
    clock: Clock
    settings: IngestSettings
    monotonic: Callable[[], float] = time.monotonic
