"""Saved explorations, below app.api and app.web: the view registry (`registry`) and which results this server
computed (`provenance`)."""
