"""The ground floor: label sets, metric names, the run directory's names and readers, errors,
atomic writes, secrets redaction and distributed helpers. Imported by every layer; imports none
(the layer contract in pyproject.toml, checked by tests/test_layers.py)."""
