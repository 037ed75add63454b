from oellm.follow.loop import main

main()
