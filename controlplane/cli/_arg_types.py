"""Argument types for argparse: a bad value is a usage error naming the flag, before anything starts."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from controlplane.config.mission import NAME_PATTERN


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give a whole number from 1 to 65535, such "
                                         "as 8000")
    return port


def valid_name(text: str) -> str:
    """A mission's, key's, team's or agent's name."""
    if not re.match(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a name: use letters, digits, '_', '.' and '-' only, "
                                         "starting with a letter or digit")
    return text


def positive_number(example: str) -> Callable[[str], float]:
    """The type of a flag that takes a number above 0; its error gives `example`."""
    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = 0.0
        if not number > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0: give one such as {example}")
        return number
    return parse
