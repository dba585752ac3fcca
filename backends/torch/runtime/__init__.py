"""Runtime support copied verbatim into generated PyTorch programs; depends only on torch and numpy."""
