"""Command lines behind `python -m app` (app/__main__.py): `atlas` (build the feature atlas), `map` (build its map)."""
