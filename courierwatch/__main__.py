from courierwatch.cli import main

main()
