"""The events service of the ALPR edge pipeline (see docs/architecture.md)."""
