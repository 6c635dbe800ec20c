"""invoke collections, one module each; tasks.py at the top joins them."""
