from pictale.cli.main import app

app()
