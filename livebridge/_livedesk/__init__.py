"""Livedesk API channel: client, sink and the embedded emulator."""
