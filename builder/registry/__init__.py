"""The registry client: OCI distribution-spec 1.1 over HTTP, with no Docker engine (issue 11)."""

from builder.registry.auth import Credentials, stored_credentials
from builder.registry.client import Manifest, RegistryClient
from builder.registry.reference import Reference

__all__ = ["Credentials", "Manifest", "Reference", "RegistryClient", "stored_credentials"]
