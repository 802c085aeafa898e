"""``zoo fit``, ``sample``, ``diagnose``, ``nowcast`` and ``lcsc``: commands over the generators library."""
