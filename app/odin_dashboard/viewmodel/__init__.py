"""Plain-Python view-model of the dashboard: no GUI import here (unit-tested)."""
