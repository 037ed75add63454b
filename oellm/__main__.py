from oellm.cli import main

main()
