"""The ``zoo`` command and its zoo-side subcommands; no library module imports these."""
