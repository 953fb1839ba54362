"""Tests of onwatch's accounts app."""
