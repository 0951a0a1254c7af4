"""llmkit: make language models forget, hallucinate less and abstain, and measure it honestly.

The library has no CLI code and never prints; the `llmkit` command lives in `llmkit.commands`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
