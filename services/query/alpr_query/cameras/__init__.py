"""The cameras domain of the query API: routes (handlers), schemas (msgspec structs) and repository (SQL)."""
