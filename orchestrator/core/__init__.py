"""What every part of the orchestrator stands on: where things live (settings), reading input files
with bounds (config_files), writing files that survive crashes (durable), text that is safe to show
(safe_text), and the lab's processes (processes). It imports nothing else of the orchestrator."""
