"""`swcli console`: a local web app over the store and registries (imported only by that command)."""
