"""Command-line entry point (`genppl`)."""
