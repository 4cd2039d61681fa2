#!/usr/bin/python3
"""Self test of the e2e harness (no daemon needed): the strict safetensors reader, view and
config checks, zip helpers, against the real HF-written golden files in tests/data."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

if __name__ == "__main__":
    sys.exit(T._selftest())
