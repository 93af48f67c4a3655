"""The Echos' network traffic: captured during a night or imported, read into flows, linked to steps.

- capture.py: the night's tcpdump, filtered to the lab's Echos, and the files it leaves;
- flows.py: a capture file read packet by packet into flows, with the names behind them;
- domains.py: registrable domains (public suffix list, offline) and the operator's tracker list;
- link.py: each flow linked to the step whose window holds it, or marked background;
- store.py: captures and flows in the log (import, analyze).
"""
