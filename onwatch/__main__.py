from onwatch.cli import main

main()
