"""Training scripts: the task classifier (and, later, UIP2P with the Edit Reversibility Constraint)."""
