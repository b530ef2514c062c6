"""`alpr run`: the whole system from one command (supervisor, embedded database, live status, summary)."""
