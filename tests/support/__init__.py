"""Test support: fake providers, certificates, a running proxy. Loopback only."""
