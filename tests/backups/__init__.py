"""Tests of onwatch's backups app."""
