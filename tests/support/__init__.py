"""Helpers shared by several test folders (not shipped by any package): `tiny_models.make_export_tree`."""
