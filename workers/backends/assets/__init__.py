"""What backends load when their actor starts: model weights and data sets, fetched once per node, pinned by sha256."""
