"""skyform: self-hosted serverless for Python model apps.

`import skyform` gives the user SDK only, and stays light: it must not pull in
the CLI, rich, deepdiff, typer or SkyPilot, because runners import it too.
"""

from skyform.app import App, AppOptions, endpoint
from skyform.errors import SkyformError
from skyform.machines import MACHINE_TYPES, MachineType

__version__ = "0.1.0"

__all__ = [
    "MACHINE_TYPES",
    "App",
    "AppOptions",
    "MachineType",
    "SkyformError",
    "__version__",
    "endpoint",
]
