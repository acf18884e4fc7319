"""Sub-commands of the ``foresight`` command line, one module per group."""
