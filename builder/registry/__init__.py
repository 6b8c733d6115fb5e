"""The registry client: OCI distribution-spec 1.1 over HTTP, with no Docker engine (issue 11)."""
