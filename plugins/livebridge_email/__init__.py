"""The inbound email source."""
