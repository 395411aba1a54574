from lcdoc.cli import main

main()
