from ibot.cli import main

main()
