"""What every layer uses: where adaptctl talks (console, library_output), its error types (errors), secrets kept
out of what it writes (redact), the run directory's files, manifests and lock (rundir), files written outside
it (outputs), the processes it starts (children, distributed) and the base of every recipe section (section).
Nothing here imports from the rest of adaptctl."""
