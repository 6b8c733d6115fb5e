"""The store and registries: push, pull, copy, and the OCI artifacts swcli attaches."""
