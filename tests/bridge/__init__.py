"""Unit tests of the bridge's pure core (signature, parse, masking), and the paths they read."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"
REPO_ROOT = Path(__file__).parents[2]


def spec_samples_dir() -> Path:
    """The spec's sample notifications: $PAYNOTIFY_SPEC_SAMPLES, else ../shared/spec/samples.

    Missing samples are an error, never a skip: the tests that read them are the proof that every
    documented notification verifies and parses.
    """
    configured = os.environ.get("PAYNOTIFY_SPEC_SAMPLES")
    directory = Path(configured) if configured else REPO_ROOT.parent / "shared" / "spec" / "samples"
    samples = sorted(directory.glob("*.json"))
    if not samples:
        raise FileNotFoundError(
            f"no spec samples in {directory}: "
            "set PAYNOTIFY_SPEC_SAMPLES to the spec's samples folder"
        )
    return directory


def spec_samples() -> dict[str, bytes]:
    """Every sample's name (without .json) and its exact bytes."""
    return {path.stem: path.read_bytes() for path in sorted(spec_samples_dir().glob("*.json"))}
