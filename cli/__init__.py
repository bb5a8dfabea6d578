"""The `flm` command line: thin Typer commands that call library code and render results."""
