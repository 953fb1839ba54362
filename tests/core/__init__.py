"""Tests of onwatch's core app."""
