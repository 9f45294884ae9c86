"""The `edgetune` command: `main` parses arguments, then calls the same functions the server and tests use."""
