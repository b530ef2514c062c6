"""The detect service of the ALPR edge pipeline (see docs/architecture.md)."""
