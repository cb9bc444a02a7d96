from xferd.cli import main

main()
