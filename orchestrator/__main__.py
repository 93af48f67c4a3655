from orchestrator.cli.main import main

# Worker processes are spawned, and spawn re-imports the parent's main module: without this guard
# every worker of `python -m orchestrator` would start the command line over again.
if __name__ == "__main__":
    main()
