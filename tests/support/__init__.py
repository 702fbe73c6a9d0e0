"""Helpers shared by the test folders (shipped by no package): `tiny_models.make_export_tree`, `cli.run_cli`."""
