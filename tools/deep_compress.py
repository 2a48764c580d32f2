#!/usr/bin/env python3
"""Kept for existing scripts: ``cmpstore finetune`` is the command now; this runs it with the same options."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from cmpstore.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
