from edge_svp.cli import main

main()
