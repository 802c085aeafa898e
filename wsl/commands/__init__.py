"""``zoo train``: the command over :func:`wsl.train.train`."""
