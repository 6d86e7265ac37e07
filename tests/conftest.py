"""Set before anything imports Ray: keep a local Ray on 127.0.0.1."""

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
