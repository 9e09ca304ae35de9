"""Export of our models to other runtimes."""
