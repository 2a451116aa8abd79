"""`python -m ibot.testing.fake_openai`: the fake as its own process, for the offline demo."""

from ibot.testing.fake_openai.server import main

main()
