"""The ODIN desktop dashboard (Dear PyGui): `odin-dashboard`."""
