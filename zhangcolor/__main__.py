"""``python -m zhangcolor`` (and ``torchrun -m zhangcolor``) runs the command line."""

from zhangcolor.cli import main

main()
