"""Reading and writing user files: images, pairs lists, HDF5 feature/match stores, COLMAP databases."""
