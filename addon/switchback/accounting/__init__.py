"""Accounting as policy: worst-case estimates, prices and budgets. Pure: the
figures live in `state.ledger`, and a call's charge in `engine.charge`."""
