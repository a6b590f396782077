"""Kilowatt: an OCPP 1.6J Central System."""

__version__ = "0.1.0"
__all__ = ["__version__"]
