"""The contract suite every store backend must pass unchanged."""
