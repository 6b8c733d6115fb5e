"""`python3 -m builder.container`: the entrypoint every model image runs (templates/Dockerfile.j2). The app is
:mod:`builder.cli.container`; this name stays because images built before the move run it."""

from builder.cli.container import main

if __name__ == "__main__":
    raise SystemExit(main())
