"""Tests of onwatch's uptime app."""
