"""The policy lab: fit and evaluate policies on recorded traces with the stream's own decision code."""
