"""The shipped bin artifacts: the paper's 313 ab centres and the default prior (README.md)."""
