"""The staff audit log: who changed what, when."""
