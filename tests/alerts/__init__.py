"""Tests of onwatch's alerts app."""
