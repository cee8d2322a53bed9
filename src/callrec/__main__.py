from callrec.cli import main

main()
