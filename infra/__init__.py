"""Operations: configuration, brokers, Ray, pipeline deployment, client, CLI."""

import os

# Ray on Linux swaps 127.0.0.1 for the routable address unless this is "0" before it starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
