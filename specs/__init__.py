"""The spec library, installed as data under switchc.specs (see README.md for the list)."""
