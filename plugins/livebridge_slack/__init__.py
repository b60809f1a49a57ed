"""Slack source plugin for livebridge."""
