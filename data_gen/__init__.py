"""Behavioural simulator of full-screen live-stream e-commerce sessions (see README.md)."""
