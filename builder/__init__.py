"""swcli: ship a model, its dataset and its environment as OCI images and get trustworthy metrics out of them."""

__version__ = "0.1.0"
