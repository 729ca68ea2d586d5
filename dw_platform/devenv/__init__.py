"""The development environment: the embedded servers (`embedded`) a laptop runs when no production
settings are given, and the demo (`demo`) that runs every domain's sample step on them. Nothing
the code location needs in production imports this package (the CLI does)."""
