"""Tasks, torch-free half: each task's record format and validator, file summary, job checks and defaults."""
