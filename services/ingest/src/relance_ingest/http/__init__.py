"""HTTP edge of ingest: the router, the body-limit middleware and OpenAPI schemas."""
