from tildekit.cli import main

main()
