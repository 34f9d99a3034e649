"""Accounting: what calls use and cost, and the budgets that hold them back."""
