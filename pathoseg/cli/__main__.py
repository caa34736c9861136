from pathoseg.cli import main

main()
