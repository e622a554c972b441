from edge_svp.cli import command

command()
