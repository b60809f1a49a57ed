"""The web-form source."""
