"""Published figures, fits of the cost models to them, and residual reports."""
