"""Common code of the ALPR platform: settings, logging, metrics, schemas, transport, frame store, lifecycle."""
