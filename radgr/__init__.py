"""The `radgr` command line: one entry point mounting each package's sub-commands."""
