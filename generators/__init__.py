"""Weight generators (D2NWG, DeepWeightFlow, KNOWN, LCSC), one sampling API, and memorization diagnostics."""
