"""Tests of onwatch's web app."""
