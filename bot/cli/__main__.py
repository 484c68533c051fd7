"""`python -m bot.cli ...`: the same as the `conjure` console script."""

from bot.cli.main import main

raise SystemExit(main())
