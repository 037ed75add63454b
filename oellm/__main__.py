import sys

if sys.argv[1:2] == ["worker"]:  # the array tasks' entry: no CLI stack, it may run in an image without one
    from oellm.worker.__main__ import main as worker

    worker(sys.argv[2:])
else:
    from oellm.cli import main

    main()
