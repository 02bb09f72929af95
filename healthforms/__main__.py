from healthforms.cli import app

app(prog_name="healthforms")
