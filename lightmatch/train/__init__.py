"""Training of matchers on homographies of image folders: data, losses, the loop (see docs/training.md)."""
