"""Command-line tools of `alpr` that are not services."""
