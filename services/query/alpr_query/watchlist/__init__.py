"""The watchlist domain of the query API: routes (handlers), schemas (msgspec structs) and repository (SQL)."""
