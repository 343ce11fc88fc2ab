#!/usr/bin/env python
"""Build Salient ImageNet. `python build_dataset.py --help`; offline demo: `python build_dataset.py --demo`."""

import sys

from salient_imagenet_builder.cli import build_main

if __name__ == "__main__":
    sys.exit(build_main())
