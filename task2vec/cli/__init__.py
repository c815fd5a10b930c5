"""The command line: one thin layer over the public API, one module per command group."""
